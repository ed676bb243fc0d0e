// Command goclient drives Go's etcd client (go.etcd.io/etcd/client/v3) for evetcd's
// interop tests: a Rust test starts it, writes commands to its stdin and reads results
// from its stdout, so it can interleave Go clientv3 and evetcd operations step by step.
//
// Usage: goclient --endpoints 127.0.0.1:2379[,...] [--dial-timeout 5s]
//
// # Protocol
//
// Both directions carry one JSON object per line. Once connected, the helper writes
//
//	{"id":0,"event":"ready","client":"v3.6.17"}
//
// Each command is an object with a unique positive "id" and a "cmd" (unknown fields are
// rejected, so a typo fails the test). Every command gets exactly one result line,
//
//	{"id":7,"ok":true, ...fields}   or   {"id":7,"ok":false,"error":"...","code":"NotFound"}
//
// where "code" (when known) is the gRPC code name of the failure.
//
// Plain commands run one after another, in the order they arrive; their result line is
// written when they have finished. Background commands (watch, observe, lock, campaign,
// stm_transfer, endpoints_watch, session) run in a goroutine of their own, so they never
// block the commands after them: their result line says they have started, then they
// write event lines tagged with their id, {"id":7,"event":"watch",...}, and end with
// exactly one "done" event, {"id":7,"event":"done","ok":true,...} or
// {"id":7,"event":"done","ok":false,"error":"...","code":"..."}. A command sent after
// its "done" line has been read finds the command finished (an unlock after a lock's
// done, say); a cancel is answered after the cancelled command's "done" line.
//
// Commands (optional fields in brackets):
//
//	put        key value [lease] [prev_kv] [namespace]  -> revision [prev]
//	get        key [prefix] [revision] [namespace]      -> revision count kvs
//	delete     key [prefix] [prev_kv] [namespace]       -> revision deleted [prev_kvs]
//	watch      key [prefix] [revision] [prev_kv] [namespace]
//	           background; result once etcd created the watch (revision); events "watch"
//	           (one per etcd event: type PUT|DELETE, key, value, ..., revision) and
//	           "progress"; done fails with compact_revision when the start was compacted
//	cancel     ref: stops background command ref; answered after ref's "done" event
//	resume     ref: lets a paused stm_transfer attempt go on (see stm_transfer)
//
//	session          [ttl] [lease]  -> lease lease_hex; background: done once the session
//	                 ends (closed, orphaned, or its lease revoked or expired)
//	session_close    session: stops the keepalive and revokes the lease (Session.Close)
//	session_orphan   session: stops the keepalive only (Session.Orphan)
//	mutex            session name: concurrency.NewMutex(session, name)
//	lock             mutex: background Mutex.Lock; done -> key revision
//	trylock          mutex: Mutex.TryLock -> key revision, or "mutex: Locked by another session"
//	unlock           mutex: Mutex.Unlock
//	election         session name: concurrency.NewElection(session, name)
//	campaign         election value: background Election.Campaign; done -> key revision lease
//	proclaim         election value
//	leader           election -> key value create_revision mod_revision lease
//	resign           election
//	observe          election: background Election.Observe; events "leader" (key value ...)
//	stm_transfer     from to amount [isolation] [pause]: background concurrency.NewSTM moving
//	                 amount from key "from" to key "to" (decimal balances); done ->
//	                 from_balance to_balance attempts revision. With pause, every attempt
//	                 stops after its reads with an event "read" (attempt from to) until a
//	                 resume command. isolation: serializable (default), serializable_snapshot,
//	                 repeatable_reads, read_committed
//
//	endpoints_add    target name addr [metadata] [lease]: Manager.AddEndpoint(target/name)
//	endpoints_delete target name
//	endpoints_list   target -> endpoints {key: {addr, metadata}}
//	endpoints_watch  target: background Manager.NewWatchChannel; events "update"
//	                 (op add|delete, key, addr, metadata)
//	json_marshal     json [use_number] | string_hex -> bytes_hex: json.Marshal's output (json.go)
//
// "session", "mutex" and "election" fields name the id of the command that created the
// object. With "namespace", put/get/delete/watch go through namespace.NewKV/NewWatcher, so
// keys in commands and results are relative to it. Keys and values are strings.
//
// The helper exits when stdin closes.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc/status"
)

// opTimeout bounds every plain command, so a stuck server fails a command instead of
// hanging the helper.
const opTimeout = 15 * time.Second

// obj is one JSON object, a result's or an event's fields.
type obj = map[string]any

// command is one line of input. Which fields matter depends on cmd (see the package doc).
type command struct {
	ID  int64  `json:"id"`
	Cmd string `json:"cmd"`

	// KV and watch.
	Key       string `json:"key"`
	Value     string `json:"value"`
	Prefix    bool   `json:"prefix"`
	Revision  int64  `json:"revision"`
	Lease     int64  `json:"lease"`
	PrevKV    bool   `json:"prev_kv"`
	Namespace string `json:"namespace"`

	// cancel and resume: the id of a background command.
	Ref int64 `json:"ref"`

	// Sessions, mutexes and elections.
	TTL      int    `json:"ttl"`
	Session  int64  `json:"session"`
	Mutex    int64  `json:"mutex"`
	Election int64  `json:"election"`
	Name     string `json:"name"`

	// STM.
	From      string `json:"from"`
	To        string `json:"to"`
	Amount    int64  `json:"amount"`
	Isolation string `json:"isolation"`
	Pause     bool   `json:"pause"`

	// Endpoints (name is the endpoint's name under target).
	Target   string          `json:"target"`
	Addr     string          `json:"addr"`
	Metadata json.RawMessage `json:"metadata"`

	// json_marshal: JSON text, or (when present) hex of a Go string's raw bytes.
	JSON      string  `json:"json"`
	UseNumber bool    `json:"use_number"`
	StringHex *string `json:"string_hex"`
}

// background is a running background command.
type background struct {
	ctx    context.Context
	cancel context.CancelFunc
	// resume wakes a paused stm_transfer attempt.
	resume chan struct{}
	// finished is closed right after the command's "done" event has been written, under
	// the output lock (see finish).
	finished chan struct{}
}

// pending reports whether the command has not written its "done" event yet. Taking the
// output lock makes this exact: once the test has read the "done" line (and so can send a
// command that depends on it), finished is closed.
func (h *helper) pending(b *background) bool {
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	select {
	case <-b.finished:
		return false
	default:
		return true
	}
}

// body is the goroutine of a background command: it may emit events, and returns the
// fields of its "done" event, or the error that ended it.
type body func(emit func(event string, fields obj)) (obj, error)

// plainHandler runs a plain command and returns its result's fields.
type plainHandler func(h *helper, c *command) (obj, error)

// bgHandler starts a background command (b.ctx is cancelled by a cancel command) and
// returns its result's fields and the body to run once the result has been written.
type bgHandler func(h *helper, c *command, b *background) (obj, body, error)

var plainCommands = map[string]plainHandler{
	"put":              (*helper).put,
	"get":              (*helper).get,
	"delete":           (*helper).del,
	"cancel":           (*helper).cancelCmd,
	"resume":           (*helper).resumeCmd,
	"session_close":    (*helper).sessionClose,
	"session_orphan":   (*helper).sessionOrphan,
	"mutex":            (*helper).newMutex,
	"trylock":          (*helper).tryLock,
	"unlock":           (*helper).unlock,
	"election":         (*helper).newElection,
	"proclaim":         (*helper).proclaim,
	"leader":           (*helper).leader,
	"resign":           (*helper).resign,
	"endpoints_add":    (*helper).endpointsAdd,
	"endpoints_delete": (*helper).endpointsDelete,
	"endpoints_list":   (*helper).endpointsList,
}

var bgCommands = map[string]bgHandler{
	"watch":           (*helper).watch,
	"session":         (*helper).session,
	"lock":            (*helper).lock,
	"campaign":        (*helper).campaign,
	"observe":         (*helper).observe,
	"stm_transfer":    (*helper).stmTransfer,
	"endpoints_watch": (*helper).endpointsWatch,
}

// helper holds the client and the objects commands created. Its maps are only used by
// the main goroutine; background bodies get what they need when they start.
type helper struct {
	client    *clientv3.Client
	out       *output
	bg        map[int64]*background
	sessions  map[int64]*concurrency.Session
	mutexes   map[int64]*mutexEntry
	elections map[int64]*electionEntry
}

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated etcd endpoints")
	dialTimeout := flag.Duration("dial-timeout", 5*time.Second, "timeout for connecting")
	flag.Parse()
	if *endpoints == "" {
		fmt.Fprintln(os.Stderr, "goclient: --endpoints is required")
		os.Exit(2)
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(*endpoints, ","),
		DialTimeout: *dialTimeout,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "goclient: connecting to %s: %v\n", *endpoints, err)
		os.Exit(1)
	}
	h := &helper{
		client:    client,
		out:       &output{enc: json.NewEncoder(os.Stdout)},
		bg:        map[int64]*background{},
		sessions:  map[int64]*concurrency.Session{},
		mutexes:   map[int64]*mutexEntry{},
		elections: map[int64]*electionEntry{},
	}
	h.out.write(obj{"id": 0, "event": "ready", "client": clientVersion()})
	h.serve(os.Stdin)
}

// clientVersion is the version of go.etcd.io/etcd/client/v3 built in.
func clientVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "go.etcd.io/etcd/client/v3" {
				return dep.Version
			}
		}
	}
	return "unknown"
}

// serve runs commands read from in until it closes.
func (h *helper) serve(in io.Reader) {
	r := bufio.NewReaderSize(in, 1<<16)
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			h.handle(line)
		}
		if err != nil {
			return // EOF: the test is done (or gone)
		}
	}
}

// handle parses and runs one command line.
func (h *helper) handle(line []byte) {
	// The id first, leniently, so that even a malformed command is answered under it.
	var head struct {
		ID int64 `json:"id"`
	}
	_ = json.Unmarshal(line, &head)
	var c command
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		h.fail(head.ID, fmt.Errorf("bad command: %w", err))
		return
	}
	if c.ID <= 0 {
		h.fail(0, fmt.Errorf("command without a positive id: %s", bytes.TrimSpace(line)))
		return
	}
	if _, dup := h.bg[c.ID]; dup {
		h.fail(c.ID, fmt.Errorf("id %d is already taken by a background command", c.ID))
		return
	}
	if run, ok := plainCommands[c.Cmd]; ok {
		res, err := run(h, &c)
		if err != nil {
			h.fail(c.ID, err)
		} else {
			h.reply(c.ID, res)
		}
		return
	}
	if start, ok := bgCommands[c.Cmd]; ok {
		h.startBackground(&c, start)
		return
	}
	h.fail(c.ID, fmt.Errorf("unknown command %q", c.Cmd))
}

// startBackground starts a background command: its result, then its body in a goroutine
// that ends with the "done" event.
func (h *helper) startBackground(c *command, start bgHandler) {
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{ctx: ctx, cancel: cancel, resume: make(chan struct{}, 1), finished: make(chan struct{})}
	res, run, err := start(h, c, b)
	if err != nil {
		cancel()
		h.fail(c.ID, err)
		return
	}
	h.bg[c.ID] = b
	h.reply(c.ID, res)
	id := c.ID
	go func() {
		defer cancel()
		emit := func(event string, fields obj) { h.event(id, event, fields) }
		fields, err := run(emit)
		if err != nil {
			fields = errorFields(err)
			fields["ok"] = false
		} else {
			if fields == nil {
				fields = obj{}
			}
			fields["ok"] = true
		}
		fields["id"] = id
		fields["event"] = "done"
		h.out.write(fields, func() { close(b.finished) })
	}()
}

// cancelCmd cancels background command ref and waits for its "done" event.
func (h *helper) cancelCmd(c *command) (obj, error) {
	b, err := h.background(c.Ref)
	if err != nil {
		return nil, err
	}
	b.cancel()
	select {
	case <-b.finished:
		return obj{}, nil
	case <-time.After(opTimeout):
		return nil, fmt.Errorf("command %d did not end within %v of its cancellation", c.Ref, opTimeout)
	}
}

// resumeCmd lets a paused stm_transfer attempt go on.
func (h *helper) resumeCmd(c *command) (obj, error) {
	b, err := h.background(c.Ref)
	if err != nil {
		return nil, err
	}
	select {
	case b.resume <- struct{}{}:
		return obj{}, nil
	default:
		return nil, fmt.Errorf("command %d already has a resume it has not used", c.Ref)
	}
}

func (h *helper) background(id int64) (*background, error) {
	b, ok := h.bg[id]
	if !ok {
		return nil, fmt.Errorf("no background command with id %d", id)
	}
	return b, nil
}

// opContext bounds a plain command.
func opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// output writes whole JSON lines; results and events come from several goroutines.
type output struct {
	mu  sync.Mutex
	enc *json.Encoder
}

// write writes v as one line, then runs each of then while still holding the lock.
func (o *output) write(v obj, then ...func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.enc.Encode(v); err != nil {
		fmt.Fprintf(os.Stderr, "goclient: writing to stdout: %v\n", err)
		os.Exit(1)
	}
	for _, f := range then {
		f()
	}
}

func (h *helper) reply(id int64, fields obj) {
	line := obj{"id": id, "ok": true}
	for k, v := range fields {
		line[k] = v
	}
	h.out.write(line)
}

func (h *helper) fail(id int64, err error) {
	line := errorFields(err)
	line["id"] = id
	line["ok"] = false
	h.out.write(line)
}

func (h *helper) event(id int64, event string, fields obj) {
	line := obj{"id": id, "event": event}
	for k, v := range fields {
		line[k] = v
	}
	h.out.write(line)
}

// detailedError is an error with extra fields for its result or done line.
type detailedError struct {
	err    error
	fields obj
}

func (e *detailedError) Error() string { return e.err.Error() }
func (e *detailedError) Unwrap() error { return e.err }

// errorFields describes err: its message, the gRPC code name when there is one, and any
// extra fields.
func errorFields(err error) obj {
	f := obj{"error": err.Error()}
	if code := errorCode(err); code != "" {
		f["code"] = code
	}
	var de *detailedError
	if errors.As(err, &de) {
		for k, v := range de.fields {
			f[k] = v
		}
	}
	return f
}

func errorCode(err error) string {
	var etcdErr rpctypes.EtcdError
	switch {
	case errors.Is(err, context.Canceled):
		return "Canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "DeadlineExceeded"
	case errors.As(err, &etcdErr):
		return etcdErr.Code().String()
	}
	if s, ok := status.FromError(err); ok && s.Code() != 0 {
		return s.Code().String()
	}
	return ""
}
