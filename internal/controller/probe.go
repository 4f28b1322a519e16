package controller

import (
	"context"
	"net"
	"net/http"
	"time"
)

// probeClient is shared by every readiness probe; no keep-alive, so a probe
// leaves no idle connection behind in the instance.
var probeClient = &http.Client{
	Timeout: 2 * time.Second,
	Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       (&net.Dialer{Timeout: time.Second}).DialContext,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// probe blocks until addr is ready or ctx ends. With a health path, ready
// means a 2xx or 3xx answer to GET; without one, an accepted connection.
// It polls every millisecond at first, since most of a fast instance's
// cold start is spent here, then backs off for slow starters.
func probe(ctx context.Context, addr, health string) error {
	start := time.Now()
	url := "http://" + addr + health
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if check(ctx, addr, url, health) {
			return nil
		}
		switch el := time.Since(start); {
		case el < 200*time.Millisecond:
			t.Reset(time.Millisecond)
		case el < 2*time.Second:
			t.Reset(5 * time.Millisecond)
		default:
			t.Reset(25 * time.Millisecond)
		}
	}
}

func check(ctx context.Context, addr, url, health string) bool {
	if health == "" {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}
