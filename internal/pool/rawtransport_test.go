package pool

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// scripted is an instance that answers each request on a connection with
// the next of answers, raw, then closes it; it sends each connection
// it accepts on conns.
func scripted(t *testing.T, answers ...string) (addr string, conns chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = make(chan net.Conn, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for _, a := range answers {
					req, err := http.ReadRequest(br)
					if a == "" {
						return
					}
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					io.WriteString(c, a)
				}
			}()
		}
	}()
	return ln.Addr().String(), conns
}

func get(t *testing.T, rt *RawTransport, got1xx func(int, http.Header) error) (*http.Response, string, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+rt.Addr+"/", nil)
	resp, err := rt.Send(context.Background(), req, got1xx)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b), nil
}

func TestRawTransport_Interim(t *testing.T) {
	addr, conns := scripted(t,
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
	rt := &RawTransport{Addr: addr}
	defer rt.CloseIdleConnections()
	var hints []string
	resp, body, err := get(t, rt, func(code int, h http.Header) error {
		hints = append(hints, h.Get("Link"))
		if code != 103 {
			t.Errorf("got1xx %d", code)
		}
		return nil
	})
	if err != nil || resp.StatusCode != 200 || body != "one" || len(hints) != 1 {
		t.Fatalf("%v %v %q %v", err, resp, body, hints)
	}
	_, body, err = get(t, rt, nil)
	if err != nil || body != "two" {
		t.Fatalf("second: %q %v", body, err)
	}
	if len(conns) != 1 {
		t.Fatalf("%d connections, want the one reused", len(conns))
	}
}

func TestRawTransport_CloseNotPooled(t *testing.T) {
	addr, conns := scripted(t, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
	rt := &RawTransport{Addr: addr}
	defer rt.CloseIdleConnections()
	for range 2 {
		if _, body, err := get(t, rt, nil); err != nil || body != "a" {
			t.Fatalf("%q %v", body, err)
		}
	}
	if len(conns) != 2 || rt.Idle() != 0 {
		t.Fatalf("%d connections, %d idle", len(conns), rt.Idle())
	}
}

// TestRawTransport_ClosedWhileIdle: a pooled connection that the instance
// closed is noticed before use, and the request goes on a new one.
func TestRawTransport_ClosedWhileIdle(t *testing.T) {
	addr, conns := scripted(t, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
	rt := &RawTransport{Addr: addr}
	defer rt.CloseIdleConnections()
	if _, body, err := get(t, rt, nil); err != nil || body != "a" {
		t.Fatalf("%q %v", body, err)
	}
	(<-conns).Close()
	for deadline := time.Now().Add(5 * time.Second); ; { // until the FIN has arrived
		rt.mu.Lock()
		alive := rt.idle[0].alive()
		rt.mu.Unlock()
		if !alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection still looks alive")
		}
		time.Sleep(time.Millisecond)
	}
	rt.mu.Lock()
	rt.idle[0].idleAt = time.Now().Add(-peekAfter) // looked at only when idle a while
	rt.mu.Unlock()
	if _, body, err := get(t, rt, nil); err != nil || body != "a" {
		t.Fatalf("after close: %q %v", body, err)
	}
}

func TestRawTransport_IdleTimeout(t *testing.T) {
	addr, _ := scripted(t, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
	rt := &RawTransport{Addr: addr, IdleTimeout: 20 * time.Millisecond}
	defer rt.CloseIdleConnections()
	if _, _, err := get(t, rt, nil); err != nil {
		t.Fatal(err)
	}
	if rt.Idle() != 1 {
		t.Fatal("not pooled")
	}
	for deadline := time.Now().Add(5 * time.Second); rt.Idle() != 0; {
		if time.Now().After(deadline) {
			t.Fatal("an idle connection outlived IdleTimeout")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRawTransport_Errors(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	rt := &RawTransport{Addr: addr}
	_, _, err := get(t, rt, nil)
	var ce *CallError
	if !errors.As(err, &ce) || ce.Sent {
		t.Fatalf("refused: %#v", err)
	}
	addr, _ = scripted(t, "") // reads the request, closes without a word
	rt = &RawTransport{Addr: addr}
	_, _, err = get(t, rt, nil)
	if !errors.As(err, &ce) || !ce.Sent || ce.Answered {
		t.Fatalf("no answer: %#v", err)
	}
	addr, _ = scripted(t, "HTTP/1.1 200 OK\r\nContent-Le")
	rt = &RawTransport{Addr: addr}
	_, _, err = get(t, rt, nil)
	if !errors.As(err, &ce) || !ce.Answered {
		t.Fatalf("half an answer: %#v", err)
	}
	addr, _ = scripted(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
	rt = &RawTransport{Addr: addr}
	if _, _, err = get(t, rt, nil); err == nil || !strings.Contains(err.Error(), "did not ask") {
		t.Fatalf("unasked 101: %v", err)
	}
}

func TestPool_AcquireExcept(t *testing.T) {
	p := New(Config{Name: "m", MaxQueue: 10, StartupTimeout: time.Second, BusyTimeout: time.Second})
	a, b := NewInstance("a", "x"), NewInstance("b", "y")
	p.Add(a)
	p.Add(b)
	for range 3 {
		l, err := p.AcquireExcept(context.Background(), a)
		if err != nil || l.Instance != b {
			t.Fatalf("%v %v", l, err)
		}
		l.Release()
	}
	p.Remove("b")
	l, err := p.AcquireExcept(context.Background(), a)
	if err != nil || l.Instance != a {
		t.Fatalf("only a left: %v %v", l, err)
	}
	l.Release()
}
