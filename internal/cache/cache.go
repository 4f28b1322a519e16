// Package cache is the gateway's response cache: one Cache per deployment,
// bounded by bytes with least-recently-used eviction, entries expiring
// after a TTL, and keyed (Key) by the deployment's revision, the caller and
// the request, so that a new revision or another tenant never sees an
// entry it did not make.
//
// A Cache is safe for concurrent use. One mutex guards the map and the LRU
// list: a Get moves one entry to the front, a Put links one in and unlinks
// the evicted; neither allocates beyond the entry itself or does I/O while
// holding it. The controller owns the configuration (Configure, on deploy
// and on every update); the gateway only reads and adds entries.
package cache

import (
	"sync"
	"sync/atomic"
	"time"
)

// EntryOverhead is what one entry is accounted beyond its headers and body:
// the entry struct, its map slot and list links, rounded up. It bounds the
// memory of many small entries, not only their bytes.
const EntryOverhead = 256

// stringOverhead is what each header string is accounted beyond its bytes
// (its string header in the slice).
const stringOverhead = 16

// Config is a deployment's cache settings. The zero Config is off.
type Config struct {
	// MaxBytes bounds the accounted size of all entries (bodies, headers
	// and EntryOverhead each); 0 turns the cache off.
	MaxBytes int64
	// TTL is how long an entry may be served after it was stored; 0 means
	// no expiry other than eviction.
	TTL time.Duration
}

// MaxEntryFraction: an answer larger than MaxBytes/MaxEntryFraction is not
// kept, so that one large answer cannot empty the cache.
const MaxEntryFraction = 4

// Entry is a kept answer. Its fields are read only once it is stored.
type Entry struct {
	// Header holds the answer's headers as name, value pairs.
	Header []string
	Body   []byte
	// Stored is when the answer was kept; Expires is when it stops being
	// served (zero: never).
	Stored, Expires time.Time

	key        Key
	rev        string
	size       int64
	prev, next *Entry
}

// Size is what e is accounted: its body, its headers and EntryOverhead.
func (e *Entry) Size() int64 {
	n := int64(EntryOverhead + len(e.Body))
	for _, s := range e.Header {
		n += int64(len(s) + stringOverhead)
	}
	return n
}

// Cache is one deployment's response cache. The zero value is not usable;
// call New.
type Cache struct {
	state atomic.Pointer[state]

	mu    sync.Mutex
	items map[Key]*Entry
	head  Entry // sentinel: head.next is the most recently used
	bytes int64
}

type state struct {
	cfg Config
	rev string
}

// New returns a cache that is off until Configure turns it on.
func New() *Cache {
	c := &Cache{items: map[Key]*Entry{}}
	c.head.next, c.head.prev = &c.head, &c.head
	c.state.Store(&state{})
	return c
}

// Configure sets the cache's settings and the deployment's current
// revision. Entries of other revisions are dropped at once (they could
// never be hit again), and entries are evicted down to the new MaxBytes; a
// zero MaxBytes drops everything. Safe to call while requests run.
func (c *Cache) Configure(cfg Config, revision string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state.Store(&state{cfg: cfg, rev: revision})
	for e := c.head.prev; e != &c.head; {
		prev := e.prev
		if e.rev != revision || cfg.MaxBytes <= 0 {
			c.remove(e)
		}
		e = prev
	}
	c.evict(cfg.MaxBytes)
}

// Purge drops every entry (the deployment was deleted).
func (c *Cache) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.items)
	c.head.next, c.head.prev = &c.head, &c.head
	c.bytes = 0
}

// Enabled reports whether the cache is on, and the revision keys must be
// made with. It does not lock.
func (c *Cache) Enabled() (revision string, on bool) {
	s := c.state.Load()
	return s.rev, s.cfg.MaxBytes > 0
}

// Config returns the current settings.
func (c *Cache) Config() Config { return c.state.Load().cfg }

// Get returns the live entry under k and marks it recently used. An
// expired entry is dropped and not returned.
func (c *Cache) Get(k Key, now time.Time) (*Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	if !e.Expires.IsZero() && !now.Before(e.Expires) {
		c.remove(e)
		return nil, false
	}
	c.unlink(e)
	c.pushFront(e)
	return e, true
}

// Put keeps e under k, made for revision, stored at now; its expiry is the
// configured TTL unless e.Expires is already earlier. It reports false,
// keeping nothing, when the cache is off, revision is no longer current,
// e has expired already (max-age=0), or e is larger than
// MaxBytes/MaxEntryFraction. Least recently used
// entries are evicted to make room. e must not be modified afterwards.
func (c *Cache) Put(k Key, revision string, e *Entry, now time.Time) bool {
	st := c.state.Load()
	size := e.Size()
	if st.cfg.MaxBytes <= 0 || revision != st.rev || size > st.cfg.MaxBytes/MaxEntryFraction ||
		!e.Expires.IsZero() && !now.Before(e.Expires) {
		return false
	}
	e.key, e.rev, e.size, e.Stored = k, revision, size, now
	if ttl := st.cfg.TTL; ttl > 0 && (e.Expires.IsZero() || now.Add(ttl).Before(e.Expires)) {
		e.Expires = now.Add(ttl)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.state.Load(); cur.rev != revision || cur.cfg.MaxBytes <= 0 { // Configure ran meanwhile
		return false
	}
	if old, ok := c.items[k]; ok {
		c.remove(old)
	}
	c.items[k] = e
	c.pushFront(e)
	c.bytes += size
	c.evict(c.state.Load().cfg.MaxBytes)
	return true
}

// Stats is what a cache holds.
type Stats struct {
	Entries int
	Bytes   int64
}

// Stats returns the number of entries and their accounted bytes.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Entries: len(c.items), Bytes: c.bytes}
}

// evict drops least recently used entries until the total fits max; c.mu
// is held.
func (c *Cache) evict(max int64) {
	for c.bytes > max && c.head.prev != &c.head {
		c.remove(c.head.prev)
	}
}

func (c *Cache) remove(e *Entry) {
	c.unlink(e)
	delete(c.items, e.key)
	c.bytes -= e.size
}

func (c *Cache) unlink(e *Entry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
}

func (c *Cache) pushFront(e *Entry) {
	e.prev = &c.head
	e.next = c.head.next
	c.head.next.prev = e
	c.head.next = e
}
