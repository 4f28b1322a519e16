package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// The timed requests are written by hand on a plain connection, with no
// client library in between: http.Client's extra goroutines would add
// their own hand-offs to the figures on both sides of the comparison.

// pollOnce connects to addr, GETs path and reports whether the answer was
// 200. A refused connection returns at once, which makes a busy loop of it
// the fastest possible readiness check.
func pollOnce(addr, path string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	resp, _, err := roundTrip(c, bufio.NewReader(c), addr, path, true)
	return err == nil && resp.StatusCode == http.StatusOK
}

// roundTrip writes one GET on c and reads the whole answer from br.
func roundTrip(c net.Conn, br *bufio.Reader, host, path string, closeConn bool) (*http.Response, []byte, error) {
	conn := "keep-alive"
	if closeConn {
		conn = "close"
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: %s\r\n\r\n", path, host, conn); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, nil, err
	}
	return resp, body, nil
}
