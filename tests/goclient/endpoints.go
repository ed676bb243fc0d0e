package main

// The service registry of go.etcd.io/etcd/client/v3/naming/endpoints: a target's
// endpoints live under "target/", one key per endpoint, each holding the JSON
// {"Op":0,"Addr":"...","Metadata":...}.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
)

func (h *helper) manager(c *command) (endpoints.Manager, error) {
	return endpoints.NewManager(h.client, c.Target)
}

// endpointKey is the key of endpoint c.Name under c.Target.
func endpointKey(c *command) string {
	return c.Target + "/" + c.Name
}

// endpointsAdd registers {addr, metadata} as target/name, on c.Lease if given.
func (h *helper) endpointsAdd(c *command) (obj, error) {
	m, err := h.manager(c)
	if err != nil {
		return nil, err
	}
	var metadata any
	if len(c.Metadata) > 0 {
		// UseNumber: numbers go back to etcd exactly as the test wrote them.
		dec := json.NewDecoder(bytes.NewReader(c.Metadata))
		dec.UseNumber()
		if err := dec.Decode(&metadata); err != nil {
			return nil, fmt.Errorf("metadata: %w", err)
		}
	}
	var opts []clientv3.OpOption
	if c.Lease != 0 {
		opts = append(opts, clientv3.WithLease(clientv3.LeaseID(c.Lease)))
	}
	ctx, cancel := opContext()
	defer cancel()
	ep := endpoints.Endpoint{Addr: c.Addr, Metadata: metadata}
	if err := m.AddEndpoint(ctx, endpointKey(c), ep, opts...); err != nil {
		return nil, err
	}
	return obj{"key": endpointKey(c)}, nil
}

func (h *helper) endpointsDelete(c *command) (obj, error) {
	m, err := h.manager(c)
	if err != nil {
		return nil, err
	}
	ctx, cancel := opContext()
	defer cancel()
	if err := m.DeleteEndpoint(ctx, endpointKey(c)); err != nil {
		return nil, err
	}
	return obj{"key": endpointKey(c)}, nil
}

// endpointsList is Manager.List: {"endpoints": {key: {"addr":..., "metadata":...}}}.
func (h *helper) endpointsList(c *command) (obj, error) {
	m, err := h.manager(c)
	if err != nil {
		return nil, err
	}
	ctx, cancel := opContext()
	defer cancel()
	eps, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	list := obj{}
	for key, ep := range eps {
		list[key] = obj{"addr": ep.Addr, "metadata": ep.Metadata}
	}
	return obj{"endpoints": list}, nil
}

// endpointsWatch is Manager.NewWatchChannel: an "update" event per endpoint, first for
// those registered now (op add), then for every later change. The manager reads the
// current endpoints before answering and watches from the next revision, so nothing
// written after the result is missed.
func (h *helper) endpointsWatch(c *command, b *background) (obj, body, error) {
	m, err := h.manager(c)
	if err != nil {
		return nil, nil, err
	}
	ch, err := m.NewWatchChannel(b.ctx)
	if err != nil {
		return nil, nil, err
	}
	return obj{}, func(emit func(string, obj)) (obj, error) {
		for updates := range ch {
			for _, up := range updates {
				emit("update", obj{
					"op":       opName(up.Op),
					"key":      up.Key,
					"addr":     up.Endpoint.Addr,
					"metadata": up.Endpoint.Metadata,
				})
			}
		}
		if err := b.ctx.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("endpoints watch channel closed")
	}, nil
}

func opName(op endpoints.Operation) string {
	switch op {
	case endpoints.Add:
		return "add"
	case endpoints.Delete:
		return "delete"
	}
	return fmt.Sprintf("op%d", op)
}
