package main

// Sessions, mutexes, elections and STM transfers (go.etcd.io/etcd/client/v3/concurrency).

import (
	"errors"
	"fmt"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// mutexEntry is a Mutex and its background lock command, if any.
type mutexEntry struct {
	m    *concurrency.Mutex
	lock *background
}

// electionEntry is an Election and its background campaign command, if any.
type electionEntry struct {
	e        *concurrency.Election
	campaign *background
}

// session creates a concurrency.Session (a lease kept alive); its done event comes when
// the session ends: closed, orphaned, or its lease revoked or expired.
func (h *helper) session(c *command, b *background) (obj, body, error) {
	opts := []concurrency.SessionOption{}
	if c.TTL != 0 {
		opts = append(opts, concurrency.WithTTL(c.TTL))
	}
	if c.Lease != 0 {
		opts = append(opts, concurrency.WithLease(clientv3.LeaseID(c.Lease)))
	}
	s, err := concurrency.NewSession(h.client, opts...)
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
			// cancel stops the reporting only; the session lives on.
			return nil, b.ctx.Err()
		}
	}, nil
}

func (h *helper) lookupSession(id int64) (*concurrency.Session, error) {
	s, ok := h.sessions[id]
	if !ok {
		return nil, fmt.Errorf("no session with id %d", id)
	}
	return s, nil
}

func (h *helper) sessionClose(c *command) (obj, error) {
	s, err := h.lookupSession(c.Session)
	if err != nil {
		return nil, err
	}
	return obj{}, s.Close()
}

func (h *helper) sessionOrphan(c *command) (obj, error) {
	s, err := h.lookupSession(c.Session)
	if err != nil {
		return nil, err
	}
	s.Orphan()
	return obj{}, nil
}

// newMutex creates concurrency.NewMutex(session, name); its key will be
// name + "/" + the session's lease in hex.
func (h *helper) newMutex(c *command) (obj, error) {
	s, err := h.lookupSession(c.Session)
	if err != nil {
		return nil, err
	}
	h.mutexes[c.ID] = &mutexEntry{m: concurrency.NewMutex(s, c.Name)}
	return obj{}, nil
}

// idleMutex is mutex c.Mutex, with no lock command still waiting on it.
func (h *helper) idleMutex(c *command) (*concurrency.Mutex, error) {
	me, ok := h.mutexes[c.Mutex]
	if !ok {
		return nil, fmt.Errorf("no mutex with id %d", c.Mutex)
	}
	if me.lock != nil && h.pending(me.lock) {
		return nil, errors.New("a lock command on this mutex is still pending; cancel it first")
	}
	return me.m, nil
}

// lock runs Mutex.Lock in the background: done (with the key) once the lock is held.
func (h *helper) lock(c *command, b *background) (obj, body, error) {
	m, err := h.idleMutex(c)
	if err != nil {
		return nil, nil, err
	}
	h.mutexes[c.Mutex].lock = b
	return obj{}, func(func(string, obj)) (obj, error) {
		if err := m.Lock(b.ctx); err != nil {
			return nil, err
		}
		return obj{"key": m.Key(), "revision": m.Header().Revision}, nil
	}, nil
}

func (h *helper) tryLock(c *command) (obj, error) {
	m, err := h.idleMutex(c)
	if err != nil {
		return nil, err
	}
	ctx, cancel := opContext()
	defer cancel()
	if err := m.TryLock(ctx); err != nil {
		return nil, err
	}
	return obj{"key": m.Key(), "revision": m.Header().Revision}, nil
}

func (h *helper) unlock(c *command) (obj, error) {
	m, err := h.idleMutex(c)
	if err != nil {
		return nil, err
	}
	ctx, cancel := opContext()
	defer cancel()
	return obj{}, m.Unlock(ctx)
}

// newElection creates concurrency.NewElection(session, name).
func (h *helper) newElection(c *command) (obj, error) {
	s, err := h.lookupSession(c.Session)
	if err != nil {
		return nil, err
	}
	h.elections[c.ID] = &electionEntry{e: concurrency.NewElection(s, c.Name)}
	return obj{}, nil
}

func (h *helper) lookupElection(id int64) (*electionEntry, error) {
	ee, ok := h.elections[id]
	if !ok {
		return nil, fmt.Errorf("no election with id %d", id)
	}
	return ee, nil
}

// idleElection is election c.Election, with no campaign command still waiting on it.
func (h *helper) idleElection(c *command) (*concurrency.Election, error) {
	ee, err := h.lookupElection(c.Election)
	if err != nil {
		return nil, err
	}
	if ee.campaign != nil && h.pending(ee.campaign) {
		return nil, errors.New("a campaign on this election is still pending; cancel it first")
	}
	return ee.e, nil
}

// campaign runs Election.Campaign in the background: done once elected.
func (h *helper) campaign(c *command, b *background) (obj, body, error) {
	e, err := h.idleElection(c)
	if err != nil {
		return nil, nil, err
	}
	h.elections[c.Election].campaign = b
	value := c.Value
	return obj{}, func(func(string, obj)) (obj, error) {
		if err := e.Campaign(b.ctx, value); err != nil {
			return nil, err
		}
		return obj{"key": e.Key(), "revision": e.Rev(), "header_revision": e.Header().Revision}, nil
	}, nil
}

func (h *helper) proclaim(c *command) (obj, error) {
	e, err := h.idleElection(c)
	if err != nil {
		return nil, err
	}
	ctx, cancel := opContext()
	defer cancel()
	return obj{}, e.Proclaim(ctx, c.Value)
}

func (h *helper) resign(c *command) (obj, error) {
	e, err := h.idleElection(c)
	if err != nil {
		return nil, err
	}
	ctx, cancel := opContext()
	defer cancel()
	return obj{}, e.Resign(ctx)
}

// leader is the election's current leader (Election.Leader: its oldest key).
func (h *helper) leader(c *command) (obj, error) {
	ee, err := h.lookupElection(c.Election)
	if err != nil {
		return nil, err
	}
	ctx, cancel := opContext()
	defer cancel()
	resp, err := ee.e.Leader(ctx)
	if err != nil {
		return nil, err
	}
	return kvFields(resp.Kvs[0]), nil
}

// observe emits a "leader" event for the current leader and every later proclamation or
// change of leader (Election.Observe).
func (h *helper) observe(c *command, b *background) (obj, body, error) {
	ee, err := h.lookupElection(c.Election)
	if err != nil {
		return nil, nil, err
	}
	ch := ee.e.Observe(b.ctx)
	return obj{}, func(emit func(string, obj)) (obj, error) {
		for resp := range ch {
			f := kvFields(resp.Kvs[0])
			f["revision"] = resp.Header.Revision
			emit("leader", f)
		}
		if err := b.ctx.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("observe channel closed")
	}, nil
}

var isolations = map[string]concurrency.Isolation{
	"":                      concurrency.Serializable,
	"serializable":          concurrency.Serializable,
	"serializable_snapshot": concurrency.SerializableSnapshot,
	"repeatable_reads":      concurrency.RepeatableReads,
	"read_committed":        concurrency.ReadCommitted,
}

// stmTransfer is the classic bank transfer: in one STM transaction, read both balances,
// check the source covers the amount, and write both back. concurrency.NewSTM retries the
// apply function until its commit finds none of its reads changed.
func (h *helper) stmTransfer(c *command, b *background) (obj, body, error) {
	iso, ok := isolations[c.Isolation]
	if !ok {
		return nil, nil, fmt.Errorf("unknown isolation %q", c.Isolation)
	}
	if c.From == "" || c.To == "" || c.From == c.To {
		return nil, nil, errors.New("stm_transfer needs two different keys, from and to")
	}
	from, to, amount, pause := c.From, c.To, c.Amount, c.Pause
	return obj{}, func(emit func(string, obj)) (obj, error) {
		attempts := 0
		var fromBalance, toBalance int64
		apply := func(stm concurrency.STM) error {
			attempts++
			var err error
			if fromBalance, err = balance(stm, from); err != nil {
				return err
			}
			if toBalance, err = balance(stm, to); err != nil {
				return err
			}
			if pause {
				emit("read", obj{"attempt": attempts, "from": fromBalance, "to": toBalance})
				select {
				case <-b.resume:
				case <-b.ctx.Done():
					return b.ctx.Err()
				}
			}
			if fromBalance < amount {
				return fmt.Errorf("insufficient funds: %s has %d, %d needed", from, fromBalance, amount)
			}
			fromBalance -= amount
			toBalance += amount
			stm.Put(from, strconv.FormatInt(fromBalance, 10))
			stm.Put(to, strconv.FormatInt(toBalance, 10))
			return nil
		}
		resp, err := concurrency.NewSTM(h.client, apply,
			concurrency.WithIsolation(iso), concurrency.WithAbortContext(b.ctx))
		if err != nil {
			return nil, &detailedError{err: err, fields: obj{"attempts": attempts}}
		}
		return obj{
			"from_balance": fromBalance,
			"to_balance":   toBalance,
			"attempts":     attempts,
			"revision":     resp.Header.Revision,
		}, nil
	}, nil
}

// balance reads key as a decimal balance; a missing key holds 0.
func balance(stm concurrency.STM, key string) (int64, error) {
	v := stm.Get(key)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("balance %s = %q is not a number", key, v)
	}
	return n, nil
}
