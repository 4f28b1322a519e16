package cache

import (
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func entry(body string) *Entry {
	return &Entry{Header: []string{"Content-Type", "application/json"}, Body: []byte(body)}
}

func keyOf(s string) Key {
	return (&Request{Revision: "r1", Method: "POST", Target: "/x", Body: []byte(s)}).Key()
}

func TestCache_GetPut(t *testing.T) {
	c := New()
	if c.Put(keyOf("a"), "r1", entry("A"), t0) {
		t.Fatal("a cache that is off kept an entry")
	}
	c.Configure(Config{MaxBytes: 1 << 20, TTL: time.Minute}, "r1")
	if !c.Put(keyOf("a"), "r1", entry("A"), t0) {
		t.Fatal("Put refused")
	}
	e, ok := c.Get(keyOf("a"), t0.Add(59*time.Second))
	if !ok || string(e.Body) != "A" || !e.Stored.Equal(t0) {
		t.Fatalf("Get = %v, %v", e, ok)
	}
	if _, ok := c.Get(keyOf("b"), t0); ok {
		t.Fatal("hit for a key never stored")
	}
	if _, ok := c.Get(keyOf("a"), t0.Add(time.Minute)); ok {
		t.Fatal("hit after the TTL")
	}
	if s := c.Stats(); s.Entries != 0 || s.Bytes != 0 {
		t.Fatalf("expired entry still held: %+v", s)
	}
	// An answer's own, shorter lifetime wins over the TTL.
	e = entry("A")
	e.Expires = t0.Add(time.Second)
	c.Put(keyOf("a"), "r1", e, t0)
	if _, ok := c.Get(keyOf("a"), t0.Add(2*time.Second)); ok {
		t.Fatal("hit after the answer's max-age")
	}
	e = entry("A")
	e.Expires = t0
	if c.Put(keyOf("z"), "r1", e, t0) {
		t.Fatal("kept an answer that had expired already")
	}
}

func TestCache_Revision(t *testing.T) {
	c := New()
	c.Configure(Config{MaxBytes: 1 << 20}, "r1")
	c.Put(keyOf("a"), "r1", entry("A"), t0)
	c.Configure(Config{MaxBytes: 1 << 20}, "r2")
	if s := c.Stats(); s.Entries != 0 || s.Bytes != 0 {
		t.Fatalf("the old revision's entries are still held: %+v", s)
	}
	if c.Put(keyOf("b"), "r1", entry("B"), t0) {
		t.Fatal("kept an answer made for a revision that is no longer current")
	}
	if rev, on := c.Enabled(); rev != "r2" || !on {
		t.Fatalf("Enabled = %q, %v", rev, on)
	}
	c.Put(keyOf("b"), "r2", entry("B"), t0)
	c.Configure(Config{}, "r2")
	if s := c.Stats(); s.Entries != 0 {
		t.Fatalf("turned off but holds %+v", s)
	}
	c.Configure(Config{MaxBytes: 1 << 20}, "r2")
	c.Put(keyOf("b"), "r2", entry("B"), t0)
	c.Purge()
	if _, ok := c.Get(keyOf("b"), t0); ok || c.Stats().Bytes != 0 {
		t.Fatal("Purge kept an entry")
	}
}

func TestCache_LRU(t *testing.T) {
	c := New()
	one := entry("0123456789").Size()
	c.Configure(Config{MaxBytes: 4 * one}, "r1")
	for _, k := range []string{"a", "b", "c", "d"} {
		c.Put(keyOf(k), "r1", entry("0123456789"), t0)
	}
	c.Get(keyOf("a"), t0) // a is now the most recently used; b the least
	c.Put(keyOf("e"), "r1", entry("0123456789"), t0)
	for k, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true, "e": true} {
		if _, ok := c.Get(keyOf(k), t0); ok != want {
			t.Errorf("%s held = %v, want %v", k, ok, want)
		}
	}
	if s := c.Stats(); s.Bytes != 4*one || s.Entries != 4 {
		t.Fatalf("stats %+v, want 4 entries of %d bytes", s, one)
	}
	// A single answer larger than a quarter of the cache is not kept.
	if c.Put(keyOf("big"), "r1", entry(string(make([]byte, 2*one))), t0) {
		t.Fatal("kept an answer larger than MaxBytes/MaxEntryFraction")
	}
	// Shrinking evicts at once.
	c.Configure(Config{MaxBytes: 2 * one}, "r1")
	if s := c.Stats(); s.Bytes > 2*one {
		t.Fatalf("after shrinking: %+v", s)
	}
}

// 10,000 distinct keys through a 1 MiB cache: the accounted bytes never go
// over max_bytes, and the heap grows by about that much, not by the 10,000
// answers that went through it.
func TestCache_MemoryBounded(t *testing.T) {
	const max = 1 << 20
	const n = 10000
	body := make([]byte, 1000)
	c := New()
	c.Configure(Config{MaxBytes: max, TTL: time.Hour}, "r1")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		e := &Entry{Header: []string{"Content-Type", "application/json", "Content-Length", "1000"}, Body: append([]byte(nil), body...)}
		if !c.Put(keyOf(strconv.Itoa(i)), "r1", e, t0) {
			t.Fatalf("Put %d refused", i)
		}
		if b := c.Stats().Bytes; b > max {
			t.Fatalf("after %d puts, %d bytes accounted, max %d", i+1, b, max)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	s := c.Stats()
	if s.Entries >= n || s.Entries < max/(2*1000) {
		t.Fatalf("%d entries held", s.Entries)
	}
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d entries, %d bytes accounted, heap grew %d bytes (%d answers of 1000 bytes went through)", s.Entries, s.Bytes, grew, n)
	// Room for the allocator's size classes and the map's buckets; the
	// 10 MB that went through must be gone.
	if grew > 2*max {
		t.Fatalf("heap grew %d bytes for a cache of max %d", grew, max)
	}
	runtime.KeepAlive(c)
}

func TestCache_Concurrent(t *testing.T) {
	c := New()
	c.Configure(Config{MaxBytes: 64 << 10, TTL: time.Second}, "r1")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				k := keyOf(fmt.Sprint(i % 300))
				now := t0.Add(time.Duration(i) * time.Millisecond)
				if e, ok := c.Get(k, now); ok && len(e.Body) != 100 {
					t.Errorf("torn entry %d", len(e.Body))
				}
				c.Put(k, "r1", entry(string(make([]byte, 100))), now)
				if g == 0 && i%500 == 0 {
					c.Configure(Config{MaxBytes: 64 << 10, TTL: time.Second}, "r1")
				}
			}
		}()
	}
	wg.Wait()
	if s := c.Stats(); s.Bytes > 64<<10 {
		t.Fatalf("over max: %+v", s)
	}
}

func TestRequest_Key(t *testing.T) {
	base := Request{Revision: "r1", Method: "POST", Target: "/v2/models/m/infer",
		Header: []string{"Content-Type", "application/json"},
		Body:   []byte(`{"id":"1","inputs":[{"name":"x","data":[1.5,2]}]}`)}
	same := []string{
		`{"inputs":[{"data":[1.5,2],"name":"x"}],"id":"1"}`,
		"{\n  \"id\": \"1\",\n  \"inputs\": [ { \"name\": \"x\", \"data\": [1.5, 2] } ]\n}\n",
	}
	for _, b := range same {
		r := base
		r.Body = []byte(b)
		if r.Key() != base.Key() {
			t.Errorf("%s: another key than %s", b, base.Body)
		}
	}
	differ := map[string]func(r *Request){
		"revision": func(r *Request) { r.Revision = "r2" },
		"caller":   func(r *Request) { r.Caller = "tenant-b" },
		"method":   func(r *Request) { r.Method = "PUT" },
		"target":   func(r *Request) { r.Target += "?q=1" },
		"header":   func(r *Request) { r.Header = []string{"Content-Type", "text/plain"} },
		"number":   func(r *Request) { r.Body = []byte(`{"id":"1","inputs":[{"name":"x","data":[1.50,2]}]}`) },
		"value":    func(r *Request) { r.Body = []byte(`{"id":"1","inputs":[{"name":"x","data":[1.5,3]}]}`) },
		"prefix":   func(r *Request) { r.JSONPrefix = 10 },
		"escape":   func(r *Request) { r.Body = []byte(`{"id":"\u0031","inputs":[{"name":"x","data":[1.5,2]}]}`) },
		"not json": func(r *Request) { r.Body = []byte(`{"id":"1"} x`) },
		// The parts are length-prefixed: moving bytes between them is
		// another key.
		"boundary": func(r *Request) { r.Revision, r.Caller = "r", "1" },
	}
	for name, change := range differ {
		r := base
		change(&r)
		if r.Key() == base.Key() {
			t.Errorf("%s: same key", name)
		}
	}
	// Binary data extension: the JSON part is canonical, the rest counts by
	// its bytes.
	bin := func(js string, data string) Request {
		return Request{Revision: "r1", Body: []byte(js + data), JSONPrefix: len(js)}
	}
	a, b := bin(`{"a":1,"b":2}`, "\x00\x01"), bin(`{ "b":2, "a":1 }`, "\x00\x01")
	if a.Key() != b.Key() {
		t.Error("binary extension: JSON part not canonical")
	}
	if c := bin(`{"a":1,"b":2}`, "\x00\x02"); c.Key() == a.Key() {
		t.Error("binary extension: data ignored")
	}
}

func TestCanonicalJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{"b": 1, "a": [true, null, "x"]}`: `{"a":[true,null,"x"],"b":1}`,
		` 12.50 `:                          `12.50`,
		`"é \u00e9"`:                       `"é \u00e9"`,
		`{"a":1,"a":2}`:                    `{"a":1,"a":2}`,
		`{"z":{"y":[{"b":[],"a":{}}],"x":1},"a b":" "}`: `{"a b":" ","z":{"x":1,"y":[{"a":{},"b":[]}]}}`,
	} {
		got, ok := CanonicalJSON([]byte(in))
		if !ok || string(got) != want {
			t.Errorf("%s: %s %v, want %s", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "{", `{"a":1} {}`, "abc", `{"a" 1}`, `[1 2]`, `{"a":1,}`, `"x`} {
		if _, ok := CanonicalJSON([]byte(in)); ok {
			t.Errorf("%q: canonical, want not JSON", in)
		}
	}
}

func FuzzCanonicalJSON(f *testing.F) {
	f.Add([]byte(`{"b":1,"a":[1,2]}`))
	f.Add([]byte(`[1.0, "x\u0000"]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, ok := CanonicalJSON(b)
		if !ok {
			if json.Valid(b) {
				t.Fatalf("valid JSON %q not taken", b)
			}
			return
		}
		again, ok := CanonicalJSON(c)
		if !ok || string(again) != string(c) {
			t.Fatalf("not a fixed point: %s -> %s", c, again)
		}
		// A valid text keeps its meaning.
		var before, after any
		if json.Unmarshal(b, &before) == nil {
			if err := json.Unmarshal(c, &after); err != nil || !reflect.DeepEqual(before, after) {
				t.Fatalf("%s -> %s: %v", b, c, err)
			}
		}
	})
}

func BenchmarkRequest_Key(b *testing.B) {
	data := make([]byte, 0, 8000)
	data = append(data, `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,784],"data":[`...)
	for i := range 784 {
		if i > 0 {
			data = append(data, ',')
		}
		data = strconv.AppendFloat(data, float64(i)/784, 'g', -1, 32)
	}
	data = append(data, "]}]}"...)
	r := Request{Revision: "r1", Method: "POST", Target: "/v2/models/m/infer", Body: data}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		r.Key()
	}
}
