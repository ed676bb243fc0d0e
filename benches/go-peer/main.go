// Command go-peer is the Go peer of the benchmark: the workloads of
// ../shared/peer-bench/WORKLOADS.md driven by Go's official client
// (go.etcd.io/etcd/client/v3, the client most etcd users run), matching the
// tonic peer (../shared/peer-bench/src/main.rs) definition for definition.
// It prints the same JSON line, with "client":"go-clientv3".
//
//	go-peer [ENDPOINT] [WORKLOAD|all]
//	  ENDPOINT  host:port, http://host:port or https://host:port (127.0.0.1:2379)
//	  WORKLOAD  seq-get seq-put pipe-get pipe-put watch-replay, or all (all);
//	            any other name (such as none) runs nothing past the connection
//
// TLS as the tonic peer takes it: PEER_BENCH_CA (PEM CA file) turns it on;
// PEER_BENCH_CERT and PEER_BENCH_KEY add a client certificate (mTLS). Give
// the endpoint as https://host:port.
//
// Threads: Go's default GOMAXPROCS is left alone, which is the machine's CPU
// count (or its cgroup CPU limit): 2 on the 2-core benchmark machine, so the
// client's goroutines run on up to two cores at once. The tonic peer's default
// (BENCH_THREADS unset or 1) is tokio's current-thread runtime, one thread for
// everything; BENCH_THREADS=2 gives it tokio's multi-threaded runtime with two
// workers, the closer match to this default. GOMAXPROCS=1 in the environment
// is the closest Go comes to the current-thread runtime (one thread runs Go
// code at a time; the garbage collector's background work and blocking
// syscalls still run beside it). Either way, cpu_us_per_op counts every
// thread of the process (getrusage RUSAGE_SELF).
//
// stdout: one JSON line per workload. stderr: one line saying GOMAXPROCS and
// the client's version.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// value is the 256-byte value every put writes (and the one seq-get reads).
var value = strings.Repeat("x", 256)

// cpuSeconds is the process's own user + system CPU time, all threads.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		log.Fatalf("getrusage: %v", err)
	}
	t := func(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }
	return t(ru.Utime) + t(ru.Stime)
}

// percentile picks as the peer does: the element at round((n-1)·p) of the sorted slice.
func percentile(sorted []float64, p float64) float64 {
	return sorted[int(math.Round(float64(len(sorted)-1)*p))]
}

func report(workload string, ops int, wall, cpu float64, latUs []float64) {
	sort.Float64s(latUs)
	p50, p99 := 0.0, 0.0
	if len(latUs) > 0 {
		p50, p99 = percentile(latUs, 0.5), percentile(latUs, 0.99)
	}
	fmt.Printf("{\"client\":\"go-clientv3\",\"workload\":\"%s\",\"ops\":%d,\"ops_per_s\":%.0f,"+
		"\"p50_us\":%.1f,\"p99_us\":%.1f,\"cpu_us_per_op\":%.2f}\n",
		workload, ops, float64(ops)/wall, p50, p99, cpu/float64(ops)*1e6)
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// oneOp is one call: a put of bench/k{i % 1000}, or a serializable get of bench/k0.
func oneOp(ctx context.Context, c *clientv3.Client, put bool, i uint64) {
	var err error
	if put {
		_, err = c.Put(ctx, "bench/k"+strconv.FormatUint(i%1000, 10), value)
	} else {
		_, err = c.Get(ctx, "bench/k0", clientv3.WithSerializable())
	}
	if err != nil {
		log.Fatalf("put=%v: %v", put, err)
	}
}

// sequential: n calls, one at a time; each call's latency, the run's wall time and CPU.
func sequential(ctx context.Context, c *clientv3.Client, put bool, n int) {
	lat := make([]float64, 0, n)
	c0, t0 := cpuSeconds(), time.Now()
	for i := uint64(0); i < uint64(n); i++ {
		s := time.Now()
		oneOp(ctx, c, put, i)
		lat = append(lat, micros(time.Since(s)))
	}
	name := "seq-get"
	if put {
		name = "seq-put"
	}
	report(name, n, time.Since(t0).Seconds(), cpuSeconds()-c0, lat)
}

// pipelined: inflight goroutines sharing the one client (one gRPC connection), each issuing
// calls back to back until the deadline; worker w's keys start at w·7919, as the peer's tasks.
func pipelined(ctx context.Context, c *clientv3.Client, put bool, inflight uint64, secs float64) {
	deadline := time.Now().Add(time.Duration(secs * float64(time.Second)))
	c0, t0 := cpuSeconds(), time.Now()
	lats := make([][]float64, inflight)
	var wg sync.WaitGroup
	for w := uint64(0); w < inflight; w++ {
		wg.Add(1)
		go func(w uint64) {
			defer wg.Done()
			var lat []float64
			i := w * 7919
			for time.Now().Before(deadline) {
				s := time.Now()
				oneOp(ctx, c, put, i)
				lat = append(lat, micros(time.Since(s)))
				i++
			}
			lats[w] = lat
		}(w)
	}
	wg.Wait()
	var all []float64
	for _, l := range lats {
		all = append(all, l...)
	}
	name := "pipe-get"
	if put {
		name = "pipe-put"
	}
	report(name, len(all), time.Since(t0).Seconds(), cpuSeconds()-c0, all)
}

// watchReplay: 100 concurrent writers put events keys wreplay/N (value "v"), untimed; then one
// prefix watch from the revision after the start replays them. Time and CPU run from the
// watch's creation to the last event; ops = events.
func watchReplay(ctx context.Context, c *clientv3.Client, events uint64) {
	resp, err := c.Get(ctx, "bench/k0")
	if err != nil {
		log.Fatalf("get: %v", err)
	}
	head := resp.Header.Revision
	const writers = 100
	per := events / writers
	var wg sync.WaitGroup
	for w := uint64(0); w < writers; w++ {
		wg.Add(1)
		go func(w uint64) {
			defer wg.Done()
			for i := uint64(0); i < per; i++ {
				if _, err := c.Put(ctx, "wreplay/"+strconv.FormatUint(w*per+i, 10), "v"); err != nil {
					log.Fatalf("put: %v", err)
				}
			}
		}(w)
	}
	wg.Wait()
	c0, t0 := cpuSeconds(), time.Now()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := c.Watch(wctx, "wreplay/", clientv3.WithPrefix(), clientv3.WithRev(head+1))
	var got uint64
	for got < events {
		wr, ok := <-ch
		if !ok {
			log.Fatalf("watch closed after %d of %d events", got, events)
		}
		if err := wr.Err(); err != nil {
			log.Fatalf("watch: %v", err)
		}
		got += uint64(len(wr.Events))
	}
	report("watch-replay", int(events), time.Since(t0).Seconds(), cpuSeconds()-c0, nil)
}

// tlsConfig from the environment, as the tonic peer reads it: nil without PEER_BENCH_CA.
func tlsConfig() *tls.Config {
	ca := os.Getenv("PEER_BENCH_CA")
	if ca == "" {
		return nil
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		log.Fatalf("read CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		log.Fatalf("no certificate in %s", ca)
	}
	cfg := &tls.Config{RootCAs: pool}
	cert, key := os.Getenv("PEER_BENCH_CERT"), os.Getenv("PEER_BENCH_KEY")
	if cert != "" && key != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			log.Fatalf("read client certificate: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

func clientVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "go.etcd.io/etcd/client/v3" {
				return m.Version
			}
		}
	}
	return "unknown"
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("go-peer: ")
	endpoint, which := "127.0.0.1:2379", "all"
	if len(os.Args) > 1 {
		endpoint = os.Args[1]
	}
	if len(os.Args) > 2 {
		which = os.Args[2]
	}
	fmt.Fprintf(os.Stderr, "go-clientv3: clientv3 %s, %s, GOMAXPROCS=%d\n",
		clientVersion(), runtime.Version(), runtime.GOMAXPROCS(0))
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		TLS:         tlsConfig(),
	})
	if err != nil {
		log.Fatalf("connect %s: %v", endpoint, err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Put(ctx, "bench/k0", value); err != nil {
		log.Fatalf("put bench/k0: %v", err)
	}
	run := func(w string) bool { return which == "all" || which == w }
	if run("seq-get") {
		sequential(ctx, c, false, 20_000)
	}
	if run("seq-put") {
		sequential(ctx, c, true, 5_000)
	}
	if run("pipe-get") {
		pipelined(ctx, c, false, 100, 5.0)
	}
	if run("pipe-put") {
		pipelined(ctx, c, true, 100, 5.0)
	}
	if run("watch-replay") {
		watchReplay(ctx, c, 50_000)
	}
}
