package main

// Namespaced sessions and lease keys (go.etcd.io/etcd/client/v3/namespace), for the
// namespace interop tests. Registered from init, beside the tables in main.go:
//
//	ns_session  namespace [ttl]  -> lease lease_hex
//	            background, as session, but on a second clientv3 client whose KV, Watcher
//	            and Lease are namespace.NewKV/NewWatcher/NewLease(namespace), the way Go's
//	            namespace package documents it; mutex, election and their commands then
//	            work on it as on any session, with names and keys relative to the namespace
//	lease_ttl   lease [namespace]  -> ttl granted_ttl keys
//	            Lease.TimeToLive with the attached keys, through namespace.NewLease when
//	            namespace is set (only the keys under it, without the prefix)

import (
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/client/v3/namespace"
)

func init() {
	plainCommands["lease_ttl"] = (*helper).leaseTTL
	bgCommands["ns_session"] = (*helper).nsSession
}

// nsClients are the namespaced clients made so far, by prefix (main goroutine only).
var nsClients = map[string]*clientv3.Client{}

// namespacedClient is a client of its own on the helper's endpoints, every key of which is
// under pfx.
func (h *helper) namespacedClient(pfx string) (*clientv3.Client, error) {
	if c, ok := nsClients[pfx]; ok {
		return c, nil
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: h.client.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	c.KV = namespace.NewKV(c.KV, pfx)
	c.Watcher = namespace.NewWatcher(c.Watcher, pfx)
	c.Lease = namespace.NewLease(c.Lease, pfx)
	nsClients[pfx] = c
	return c, nil
}

// nsSession is session on the namespaced client of c.Namespace.
func (h *helper) nsSession(c *command, b *background) (obj, body, error) {
	if c.Namespace == "" {
		return nil, nil, errors.New("ns_session needs a namespace")
	}
	client, err := h.namespacedClient(c.Namespace)
	if err != nil {
		return nil, nil, err
	}
	opts := []concurrency.SessionOption{}
	if c.TTL != 0 {
		opts = append(opts, concurrency.WithTTL(c.TTL))
	}
	s, err := concurrency.NewSession(client, opts...)
	if err != nil {
		return nil, nil, err
	}
	h.sessions[c.ID] = s
	res := obj{"lease": int64(s.Lease()), "lease_hex": fmt.Sprintf("%x", int64(s.Lease()))}
	return res, func(func(string, obj)) (obj, error) {
		select {
		case <-s.Done():
			return obj{}, nil
		case <-b.ctx.Done():
			return nil, b.ctx.Err()
		}
	}, nil
}

func (h *helper) leaseTTL(c *command) (obj, error) {
	lease := h.client.Lease
	if c.Namespace != "" {
		lease = namespace.NewLease(lease, c.Namespace)
	}
	ctx, cancel := opContext()
	defer cancel()
	resp, err := lease.TimeToLive(ctx, clientv3.LeaseID(c.Lease), clientv3.WithAttachedKeys())
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(resp.Keys))
	for _, k := range resp.Keys {
		keys = append(keys, string(k))
	}
	return obj{"ttl": resp.TTL, "granted_ttl": resp.GrantedTTL, "keys": keys}, nil
}
