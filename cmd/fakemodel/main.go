// Command fakemodel is a small HTTP server that stands in for a model server
// in tests and benchmarks. It listens on $HOST:$PORT (127.0.0.1 by default) and is steered by
// environment variables and query parameters:
//
//	HOST=0.0.0.0            listen on this host instead of 127.0.0.1 (in a pod or container)
//	FAKE_READY_DELAY=200ms  wait this long before listening (a slow cold start)
//	FAKE_NEVER_READY=1      listen, but answer /health with 503 forever
//	FAKE_IGNORE_TERM=1      ignore SIGTERM (only SIGKILL stops it)
//	FAKE_EXIT_AT_ONCE=3     exit with this code right after starting
//
//	GET  /health            200 once ready
//	ANY  /echo              echoes method, path, query, headers and body as JSON
//	ANY  /sleep?d=100ms     answers after d
//	GET  /stream?n=3&d=10ms writes n lines, flushing each, d apart
//	GET  /alloc?mb=64       allocates and touches mb MiB, then answers
//	GET  /pid               answers the process id (/sleep sets it as X-Pid)
//	ANY  /log?msg=TEXT      writes TEXT as a line to standard output (tandem logs)
//	POST /crash             exits at once with code 2
//
// Every answer carries X-Instance-Pid so tests can tell instances apart.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if code := os.Getenv("FAKE_EXIT_AT_ONCE"); code != "" {
		n, _ := strconv.Atoi(code)
		fmt.Fprintln(os.Stderr, "fakemodel: exiting at once as asked")
		os.Exit(n)
	}
	if os.Getenv("FAKE_IGNORE_TERM") != "" {
		signal.Ignore(syscall.SIGTERM)
	}
	if d, err := time.ParseDuration(os.Getenv("FAKE_READY_DELAY")); err == nil {
		time.Sleep(d)
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	pid := strconv.Itoa(os.Getpid())
	neverReady := os.Getenv("FAKE_NEVER_READY") != ""
	var hold [][]byte

	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if neverReady {
			http.Error(w, "never ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery,
			"headers": r.Header, "body": string(body),
		})
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		w.Header().Set("X-Pid", pid) // which instance served it
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "slept %s\n", d)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		f, _ := w.(http.Flusher)
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "line %d\n", i)
			if f != nil {
				f.Flush()
			}
			time.Sleep(d)
		}
	})
	mux.HandleFunc("/alloc", func(w http.ResponseWriter, r *http.Request) {
		mb, _ := strconv.Atoi(r.URL.Query().Get("mb"))
		for i := 0; i < mb; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			hold = append(hold, b)
		}
		fmt.Fprintf(w, "allocated %d MiB\n", mb)
	})
	mux.HandleFunc("/pid", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, pid) })
	// /version answers $FAKE_VERSION, so that a test tells revisions apart.
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		io.WriteString(w, os.Getenv("FAKE_VERSION"))
	})
	mux.HandleFunc("/log", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(os.Stdout, r.URL.Query().Get("msg"))
		io.WriteString(w, "logged\n")
	})
	mux.HandleFunc("/crash", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(os.Stderr, "fakemodel: crashing as asked")
		os.Exit(2)
	})
	// FAKE_FAIL_EVERY=N answers 500 to every Nth request; FAKE_DELAY
	// delays every answer (a slow or hanging revision).
	failEvery, _ := strconv.ParseInt(os.Getenv("FAKE_FAIL_EVERY"), 10, 64)
	delay, _ := time.ParseDuration(os.Getenv("FAKE_DELAY"))
	var served atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Instance-Pid", pid)
		if r.URL.Path != "/health" {
			if delay > 0 {
				select {
				case <-time.After(delay):
				case <-r.Context().Done():
					return
				}
			}
			if n := served.Add(1); failEvery > 0 && n%failEvery == 0 {
				http.Error(w, "fakemodel: failing as asked (FAKE_FAIL_EVERY)", http.StatusInternalServerError)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
	host := os.Getenv("HOST")
	if host == "" {
		host = "127.0.0.1"
	}
	fmt.Fprintf(os.Stdout, "fakemodel: pid %s listening on %s:%s\n", pid, host, port)
	log.Fatal(http.ListenAndServe(host+":"+port, h))
}
