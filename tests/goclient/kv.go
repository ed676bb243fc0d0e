package main

// put, get, delete and watch, optionally under a namespace (namespace.NewKV/NewWatcher).

import (
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"
)

// kv is the client's KV, or a view of it under c.Namespace.
func (h *helper) kv(c *command) clientv3.KV {
	if c.Namespace != "" {
		return namespace.NewKV(h.client.KV, c.Namespace)
	}
	return h.client.KV
}

// watcher is the client's Watcher, or a view of it under c.Namespace.
func (h *helper) watcher(c *command) clientv3.Watcher {
	if c.Namespace != "" {
		return namespace.NewWatcher(h.client.Watcher, c.Namespace)
	}
	return h.client.Watcher
}

func (h *helper) put(c *command) (obj, error) {
	var opts []clientv3.OpOption
	if c.Lease != 0 {
		opts = append(opts, clientv3.WithLease(clientv3.LeaseID(c.Lease)))
	}
	if c.PrevKV {
		opts = append(opts, clientv3.WithPrevKV())
	}
	ctx, cancel := opContext()
	defer cancel()
	resp, err := h.kv(c).Put(ctx, c.Key, c.Value, opts...)
	if err != nil {
		return nil, err
	}
	res := obj{"revision": resp.Header.Revision}
	if resp.PrevKv != nil {
		res["prev"] = kvFields(resp.PrevKv)
	}
	return res, nil
}

func (h *helper) get(c *command) (obj, error) {
	var opts []clientv3.OpOption
	if c.Prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	if c.Revision != 0 {
		opts = append(opts, clientv3.WithRev(c.Revision))
	}
	ctx, cancel := opContext()
	defer cancel()
	resp, err := h.kv(c).Get(ctx, c.Key, opts...)
	if err != nil {
		return nil, err
	}
	return obj{"revision": resp.Header.Revision, "count": resp.Count, "kvs": kvList(resp.Kvs)}, nil
}

func (h *helper) del(c *command) (obj, error) {
	var opts []clientv3.OpOption
	if c.Prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	if c.PrevKV {
		opts = append(opts, clientv3.WithPrevKV())
	}
	ctx, cancel := opContext()
	defer cancel()
	resp, err := h.kv(c).Delete(ctx, c.Key, opts...)
	if err != nil {
		return nil, err
	}
	res := obj{"revision": resp.Header.Revision, "deleted": resp.Deleted}
	if c.PrevKV {
		res["prev_kvs"] = kvList(resp.PrevKvs)
	}
	return res, nil
}

// watch answers once etcd has created the watch, so that anything written after the
// result is seen; then every event is one "watch" event line.
func (h *helper) watch(c *command, b *background) (obj, body, error) {
	opts := []clientv3.OpOption{clientv3.WithCreatedNotify()}
	if c.Prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	if c.Revision != 0 {
		opts = append(opts, clientv3.WithRev(c.Revision))
	}
	if c.PrevKV {
		opts = append(opts, clientv3.WithPrevKV())
	}
	wch := h.watcher(c).Watch(b.ctx, c.Key, opts...)
	select {
	case wr, ok := <-wch:
		if !ok {
			return nil, nil, errors.New("watch closed before it was created")
		}
		if err := watchError(&wr); err != nil {
			return nil, nil, err
		}
		if !wr.Created {
			return nil, nil, fmt.Errorf("first watch response is not the creation: %+v", wr)
		}
		res := obj{"revision": wr.Header.Revision}
		return res, func(emit func(string, obj)) (obj, error) { return forwardWatch(b, wch, emit) }, nil
	case <-time.After(opTimeout):
		return nil, nil, fmt.Errorf("watch not created within %v", opTimeout)
	}
}

// forwardWatch emits wch's events until it closes.
func forwardWatch(b *background, wch clientv3.WatchChan, emit func(string, obj)) (obj, error) {
	for wr := range wch {
		if err := watchError(&wr); err != nil {
			return nil, err
		}
		if wr.IsProgressNotify() {
			emit("progress", obj{"revision": wr.Header.Revision})
			continue
		}
		for _, ev := range wr.Events {
			emit("watch", eventFields(ev, wr.Header.Revision))
		}
	}
	if err := b.ctx.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("watch channel closed")
}

// watchError is a failed (compacted, cancelled by the server) watch response's error.
func watchError(wr *clientv3.WatchResponse) error {
	err := wr.Err()
	if err == nil {
		return nil
	}
	if wr.CompactRevision != 0 {
		return &detailedError{err: err, fields: obj{"compact_revision": wr.CompactRevision}}
	}
	return err
}

func eventFields(ev *clientv3.Event, revision int64) obj {
	f := kvFields(ev.Kv)
	f["type"] = ev.Type.String()
	f["revision"] = revision
	if ev.PrevKv != nil {
		f["prev_value"] = string(ev.PrevKv.Value)
	}
	return f
}

func kvFields(kv *mvccpb.KeyValue) obj {
	return obj{
		"key":             string(kv.Key),
		"value":           string(kv.Value),
		"create_revision": kv.CreateRevision,
		"mod_revision":    kv.ModRevision,
		"version":         kv.Version,
		"lease":           kv.Lease,
	}
}

func kvList(kvs []*mvccpb.KeyValue) []obj {
	list := make([]obj, 0, len(kvs))
	for _, kv := range kvs {
		list = append(list, kvFields(kv))
	}
	return list
}
