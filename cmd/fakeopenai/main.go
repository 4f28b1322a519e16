// Command fakeopenai is a small OpenAI-compatible server that stands in for
// llama.cpp's server or vLLM in tests. It listens on $HOST:$PORT
// (127.0.0.1:8080 by default) and is steered by environment variables:
//
//	FAKE_REPLY="Hello from fakeopenai."  the answer; one word per streamed chunk and per completion token
//	FAKE_CHUNK_DELAY=10ms                wait this long before each streamed chunk after the first
//	FAKE_HOLD_LAST=/path/file            write a stream's last word only once this file exists
//	FAKE_READY_DELAY=200ms               wait this long before listening (a slow cold start)
//
//	GET  /health                 200
//	GET  /v1/models              the model named by FAKE_MODEL (default "fake")
//	POST /v1/chat/completions    chat.completion, or chat.completion.chunk events with "stream": true
//	                             (a last chunk with usage when stream_options.include_usage is true)
//	POST /v1/completions         text_completion, streamed or not, alike
//	POST /v1/embeddings          one 8-number embedding per input
//
// Prompt tokens are the words of the prompt, messages or input; completion
// tokens the words of the reply. Answers echo the request's model and carry
// X-Instance-Pid. Errors take OpenAI's shape.
package main

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if d, err := time.ParseDuration(os.Getenv("FAKE_READY_DELAY")); err == nil {
		time.Sleep(d)
	}
	host, port := os.Getenv("HOST"), os.Getenv("PORT")
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "" {
		port = "8080"
	}
	s := &server{
		reply: strings.Fields(os.Getenv("FAKE_REPLY")),
		hold:  os.Getenv("FAKE_HOLD_LAST"),
		model: os.Getenv("FAKE_MODEL"),
		pid:   strconv.Itoa(os.Getpid()),
		start: time.Now().Unix(),
	}
	if len(s.reply) == 0 {
		s.reply = strings.Fields("Hello from fakeopenai.")
	}
	if s.model == "" {
		s.model = "fake"
	}
	s.delay, _ = time.ParseDuration(os.Getenv("FAKE_CHUNK_DELAY"))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("GET /v1/models", s.models)
	mux.HandleFunc("POST /v1/chat/completions", s.complete(true))
	mux.HandleFunc("POST /v1/completions", s.complete(false))
	mux.HandleFunc("POST /v1/embeddings", s.embeddings)
	log.Fatal(http.ListenAndServe(net.JoinHostPort(host, port), s.withPid(mux)))
}

type server struct {
	reply []string
	hold  string
	model string
	pid   string
	start int64
	delay time.Duration
}

func (s *server) withPid(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Instance-Pid", s.pid)
		h.ServeHTTP(w, r)
	})
}

func (s *server) models(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{
		map[string]any{"id": s.model, "object": "model", "created": s.start, "owned_by": "fakeopenai"}}})
}

// request holds the fields of the three requests that the fake reads.
type request struct {
	Model    string `json:"model"`
	Messages []struct {
		Content any `json:"content"`
	} `json:"messages"`
	Prompt        any  `json:"prompt"`
	Input         any  `json:"input"`
	Stream        bool `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func decode(w http.ResponseWriter, r *http.Request) (*request, bool) {
	var req request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON: "+err.Error(), "")
		return nil, false
	}
	if req.Model == "" {
		writeError(w, http.StatusBadRequest, "you must provide a model parameter", "model")
		return nil, false
	}
	return &req, true
}

// words counts the words in a string, a list of strings or content parts.
func words(v any) int {
	switch v := v.(type) {
	case string:
		return len(strings.Fields(v))
	case []any:
		n := 0
		for _, e := range v {
			if m, ok := e.(map[string]any); ok {
				n += words(m["text"])
			} else {
				n += words(e)
			}
		}
		return n
	}
	return 0
}

func (s *server) complete(chat bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, ok := decode(w, r)
		if !ok {
			return
		}
		prompt := words(req.Prompt)
		for _, m := range req.Messages {
			prompt += words(m.Content)
		}
		usage := map[string]int{"prompt_tokens": prompt, "completion_tokens": len(s.reply), "total_tokens": prompt + len(s.reply)}
		id := fmt.Sprintf("cmpl-%s-%d", s.pid, time.Now().UnixNano())
		object := "text_completion"
		if chat {
			object = "chat.completion"
		}
		if !req.Stream {
			choice := map[string]any{"index": 0, "finish_reason": "stop", "logprobs": nil}
			if chat {
				choice["message"] = map[string]any{"role": "assistant", "content": strings.Join(s.reply, " ")}
			} else {
				choice["text"] = strings.Join(s.reply, " ")
			}
			writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": object, "created": time.Now().Unix(),
				"model": req.Model, "choices": []any{choice}, "usage": usage})
			return
		}
		if chat {
			object = "chat.completion.chunk"
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		event := func(choices []any, u any) bool {
			b, _ := json.Marshal(map[string]any{"id": id, "object": object, "created": time.Now().Unix(),
				"model": req.Model, "choices": choices, "usage": u})
			if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
				return false
			}
			return rc.Flush() == nil
		}
		for i, word := range s.reply {
			last := i == len(s.reply)-1
			if i > 0 && s.delay > 0 {
				time.Sleep(s.delay)
			}
			if last && s.hold != "" && !waitFile(r, s.hold) {
				return
			}
			text := word
			if !last {
				text += " "
			}
			choice := map[string]any{"index": 0, "finish_reason": nil, "logprobs": nil}
			if last {
				choice["finish_reason"] = "stop"
			}
			if chat {
				delta := map[string]any{"content": text}
				if i == 0 {
					delta["role"] = "assistant"
				}
				choice["delta"] = delta
			} else {
				choice["text"] = text
			}
			if !event([]any{choice}, nil) {
				return
			}
		}
		if req.StreamOptions != nil && req.StreamOptions.IncludeUsage && !event([]any{}, usage) {
			return
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
		rc.Flush()
	}
}

// waitFile waits until path exists or the client goes away.
func waitFile(r *http.Request, path string) bool {
	for {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		select {
		case <-r.Context().Done():
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (s *server) embeddings(w http.ResponseWriter, r *http.Request) {
	req, ok := decode(w, r)
	if !ok {
		return
	}
	var inputs []string
	switch v := req.Input.(type) {
	case string:
		inputs = []string{v}
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok {
				inputs = append(inputs, s)
			}
		}
	}
	if len(inputs) == 0 {
		writeError(w, http.StatusBadRequest, "input must be a string or a list of strings", "input")
		return
	}
	data := make([]any, len(inputs))
	tokens := 0
	for i, in := range inputs {
		tokens += len(strings.Fields(in))
		h := fnv.New64a()
		h.Write([]byte(in))
		seed := h.Sum64()
		vec := make([]float64, 8)
		for j := range vec {
			vec[j] = float64((seed>>(j*8))&0xff)/127.5 - 1
		}
		data[i] = map[string]any{"object": "embedding", "index": i, "embedding": vec}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "model": req.Model, "data": data,
		"usage": map[string]int{"prompt_tokens": tokens, "total_tokens": tokens}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg, param string) {
	var p any
	if param != "" {
		p = param
	}
	writeJSON(w, code, map[string]any{"error": map[string]any{"message": msg, "type": "invalid_request_error", "param": p, "code": nil}})
}
