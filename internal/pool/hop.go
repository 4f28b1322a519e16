package pool

import (
	"net/http"
	"strings"
)

// HopHeaders are the hop-by-hop headers (RFC 9110 7.6.1) that a proxy
// removes in both directions, besides those named by Connection. It is the
// one list for every forwarding path (the gateway, the v2 adapters); it
// lives here, beside the HTTP/1.1 client, because the packages that
// forward import pool and not one another. Do not modify it.
var HopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// IsHop reports whether the canonical header key k is hop-by-hop: in
// HopHeaders, or named by one of the Connection header values conn (the
// message's own Connection header). It does not allocate.
func IsHop(k string, conn []string) bool {
	for _, h := range HopHeaders {
		if k == h {
			return true
		}
	}
	for _, v := range conn {
		for v != "" {
			var f string
			f, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(f), k) {
				return true
			}
		}
	}
	return false
}

// RemoveHop deletes the hop-by-hop headers from h.
func RemoveHop(h http.Header) {
	conn := h["Connection"]
	for k := range h {
		if IsHop(k, conn) {
			delete(h, k)
		}
	}
}
