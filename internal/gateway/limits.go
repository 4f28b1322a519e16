package gateway

import (
	"fmt"
	"net/http"
	"time"

	"tandem/internal/problem"
)

// Limits bound what one client may send to a tandem listener and how
// slowly; they are the one place for the HTTP server settings of both the
// gateway and the admin listener. timeouts.request (per deployment) bounds
// a model request once an instance has taken it, body upload included.
type Limits struct {
	// MaxHeaderBytes bounds the request line and headers; a request with
	// more is answered 431. net/http itself allows 4 KiB more than its
	// MaxHeaderBytes (read-ahead slack), so the handler checks the exact
	// bound and net/http stops anything far bigger before it is buffered.
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds reading the request line and headers.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no new request
	// in this long.
	IdleTimeout time.Duration
}

// DefaultLimits are the limits NewHTTPServer uses for zero fields: 64 KiB
// of headers (nginx's large_client_header_buffers allow 4 x 8 KiB per line;
// Go's default is 1 MiB, which let 500 clients grow the gateway by 800 MB),
// 10 s to send them, 2 minutes idle between requests.
var DefaultLimits = Limits{
	MaxHeaderBytes:    64 << 10,
	ReadHeaderTimeout: 10 * time.Second,
	IdleTimeout:       2 * time.Minute,
}

// NewHTTPServer returns a server for h with limits l (zero fields take
// DefaultLimits). Before h it answers, in tandem's error shape, 431 to a
// request whose line and headers exceed l.MaxHeaderBytes and 501 to
// CONNECT. There is no ReadTimeout or WriteTimeout: bodies and streamed
// answers may take as long as timeouts.request allows.
func NewHTTPServer(h http.Handler, l Limits) *http.Server {
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultLimits.MaxHeaderBytes
	}
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = DefaultLimits.ReadHeaderTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultLimits.IdleTimeout
	}
	return &http.Server{
		Handler:           &limited{h: h, maxHeader: l.MaxHeaderBytes},
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
	}
}

type limited struct {
	h         http.Handler
	maxHeader int
}

func (l *limited) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		problem.Write(w, errConnect())
		return
	}
	if n := headerBytes(r); n > l.maxHeader {
		w.Header().Set("Connection", "close")
		problem.Write(w, problem.New(http.StatusRequestHeaderFieldsTooLarge, "headers_too_large",
			fmt.Sprintf("the request line and headers are %d bytes; at most %d are accepted", n, l.maxHeader)))
		return
	}
	l.h.ServeHTTP(w, r)
}

// headerBytes is the size of r's request line and headers as sent (each
// line with its CRLF), give or take optional whitespace.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2
	n += len("Host: ") + len(r.Host) + 2
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n + 2
}
