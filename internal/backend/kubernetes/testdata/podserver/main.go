// Command podserver is a minimal model server for pod-network tests: unlike
// cmd/fakemodel it listens on every interface (:$PORT), so that it answers
// at its pod's IP. GET /health answers ok; GET /name answers $HOSTNAME (the
// pod's name); GET /cat?path=FILE answers the file's content.
//
// For the tests of tandem's own probing: POST /sick makes /health answer
// 503 and POST /well undoes it; with SHUN_KUBELET=1 /health answers 503 to
// the kubelet's probes (User-Agent kube-probe/...), so that the pod is
// never Ready by the kubelet's word; LISTEN_AFTER (a duration such as 1s)
// waits that long before listening, as a server loading a model does.
package main

import (
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	name, _ := os.Hostname()
	shun := os.Getenv("SHUN_KUBELET") == "1"
	var sick atomic.Bool
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if sick.Load() || shun && strings.HasPrefix(r.UserAgent(), "kube-probe/") {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	http.HandleFunc("POST /sick", func(http.ResponseWriter, *http.Request) { sick.Store(true) })
	http.HandleFunc("POST /well", func(http.ResponseWriter, *http.Request) { sick.Store(false) })
	http.HandleFunc("/name", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) })
	http.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		time.Sleep(min(d, time.Minute))
		io.WriteString(w, name)
	})
	http.HandleFunc("/cat", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Write(b)
	})
	if d, err := time.ParseDuration(os.Getenv("LISTEN_AFTER")); err == nil {
		time.Sleep(d)
	}
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
