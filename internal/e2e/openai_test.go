package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tandem/internal/testbin"
)

// openaiModule finds the official openai npm package: $TANDEM_OPENAI_MODULE,
// then .cache/npm/openai (bash scripts/setup.sh openai puts it there), and
// node on $PATH. In CI a missing one fails the test.
func openaiModule(t *testing.T) (node, module string) {
	t.Helper()
	module = os.Getenv("TANDEM_OPENAI_MODULE")
	if module == "" {
		module = filepath.Join(testbin.RepoRoot(t), ".cache", "npm", "openai", "node_modules", "openai")
	}
	var msg string
	if _, err := os.Stat(filepath.Join(module, "package.json")); err != nil {
		msg = "the openai npm client is not in " + module + ": run `bash scripts/setup.sh openai` or set TANDEM_OPENAI_MODULE"
	} else if node, err = exec.LookPath("node"); err != nil {
		msg = "node not found on $PATH: run `bash scripts/setup.sh openai`"
	}
	if msg == "" {
		return node, module
	}
	if os.Getenv("CI") != "" {
		t.Fatal("CI: " + msg)
	}
	t.Skip("SKIPPED, NOT TESTED: " + msg)
	return "", ""
}

// openaiManifest is a serverless deployment of cmd/fakeopenai with an
// openai block.
func openaiManifest(t *testing.T, name, openai string, env map[string]string) string {
	bin := testbin.Build(t, "tandem/cmd/fakeopenai")
	m := fmt.Sprintf("name: %s\nmode: serverless\nruntime:\n  command: [%q]\n  health: /health\n", name, bin)
	if len(env) > 0 {
		m += "  env:\n"
		for k, v := range env {
			m += fmt.Sprintf("    %s: %q\n", k, v)
		}
	}
	return m + "scaling: {idle_timeout: 10m}\ntimeouts: {startup: 30s, request: 2m}\nopenai: " + openai + "\n"
}

// clientResult is what testdata/openai/client.cjs prints.
type clientResult struct {
	Models []struct {
		ID, Object string
		OwnedBy    string `json:"owned_by"`
		Created    int64
	}
	Chat struct {
		Cold, Model, Content string
		Usage                struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
			TotalTokens      int `json:"total_tokens"`
		}
	}
	Embeddings struct {
		Count, Dims int
		Usage       struct {
			PromptTokens int `json:"prompt_tokens"`
		}
	}
	Stream struct {
		Cold, First, Content    string
		Chunks                  int
		HoldExistedAtFirstChunk *bool
		Usage                   *struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	Unknown struct {
		NotFoundError bool
		Status        int
		Error         struct {
			Message, Type string
			Param, Code   any
		}
	}
}

// TestOpenAI_NodeClient drives tandem serve with the official openai npm
// client (v7): /v1/models, a chat completion and an embedding from a model
// at zero, a streamed chat completion from another model at zero whose
// first chunk must arrive before the instance writes its last, and an
// unknown model.
func TestOpenAI_NodeClient(t *testing.T) {
	node, module := openaiModule(t)
	s := startServer(t, "")
	hold := filepath.Join(t.TempDir(), "release-last-chunk")
	reply := "Hello from the fake model, streamed word by word."
	s.deploy("", openaiManifest(t, "chat", "{models: [gpt-4o-mini]}", nil))
	s.deploy("", openaiManifest(t, "writer", "{}", map[string]string{"FAKE_HOLD_LAST": hold, "FAKE_REPLY": reply}))
	s.deploy("", fakeManifest(t, "plain", "serverless", nil, "idle_timeout: 10m", "startup: 30s"))
	for _, name := range []string{"chat", "writer"} {
		if n := instances(s.status(name)); n != 0 {
			t.Fatalf("%s has %d instances before any request; the test needs it at zero", name, n)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // against a hang
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("testdata", "openai", "client.cjs"))
	cmd.Env = append(os.Environ(), "OPENAI_MODULE="+module, "BASE_URL=http://"+s.gateway+"/v1",
		"CHAT_MODEL=gpt-4o-mini", "STREAM_MODEL=writer", "HOLD_FILE="+hold)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() != nil {
		t.Fatalf("the openai client hung (a streamed first chunk that never arrived means the gateway buffered the stream):\n%s", stderr.String())
	}
	if err != nil {
		t.Fatalf("client.cjs: %v\n%s", err, stderr.String())
	}
	var r clientResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("client.cjs printed %q: %v", out, err)
	}

	var ids []string
	for _, m := range r.Models {
		ids = append(ids, m.ID)
		if m.Object != "model" || m.OwnedBy != "tandem" || m.Created == 0 {
			t.Errorf("model entry %+v", m)
		}
	}
	if want := []string{"chat", "gpt-4o-mini", "writer"}; !slices.Equal(ids, want) {
		t.Errorf("client.models.list() ids %q, want %q (not plain, which has no openai block)", ids, want)
	}

	if c := r.Chat; c.Cold != "true" || c.Model != "gpt-4o-mini" || c.Content != "Hello from fakeopenai." ||
		c.Usage.PromptTokens != 5 || c.Usage.CompletionTokens != 3 || c.Usage.TotalTokens != 8 {
		t.Errorf("chat completion %+v, want a cold answer from the instance with usage 5+3", c)
	}
	if e := r.Embeddings; e.Count != 2 || e.Dims != 8 || e.Usage.PromptTokens != 3 {
		t.Errorf("embeddings %+v", e)
	}

	st := r.Stream
	if st.HoldExistedAtFirstChunk == nil || *st.HoldExistedAtFirstChunk {
		t.Errorf("stream: the first chunk did not come before the instance was let write its last: %+v", st)
	}
	words := strings.Fields(reply)
	if st.Cold != "true" || st.First != words[0]+" " || st.Content != reply || st.Chunks != len(words)+1 {
		t.Errorf("stream %+v, want a cold stream of %d chunks and a usage chunk, content %q", st, len(words), reply)
	}
	if st.Usage == nil || st.Usage.PromptTokens != 5 || st.Usage.CompletionTokens != len(words) {
		t.Errorf("stream usage %+v, want 5 and %d", st.Usage, len(words))
	}

	if u := r.Unknown; !u.NotFoundError || u.Status != 404 || u.Error.Code != "model_not_found" || u.Error.Type != "invalid_request_error" ||
		u.Error.Param != "model" || !strings.Contains(u.Error.Message, "no-such-model") {
		t.Errorf("unknown model: %+v, want a NotFoundError with OpenAI's error shape", u)
	}

	// The usage the client saw was metered per model (no tenant: --auth none).
	want := []string{
		`tandem_openai_tokens_total{kind="prompt",model="chat",tenant=""} 8`, // chat 5, embeddings 3
		`tandem_openai_tokens_total{kind="completion",model="chat",tenant=""} 3`,
		`tandem_openai_tokens_total{kind="prompt",model="writer",tenant=""} 5`,
		fmt.Sprintf(`tandem_openai_tokens_total{kind="completion",model="writer",tenant=""} %d`, len(words)),
		`tandem_requests_total{code="200",model="chat",protocol="openai"} 2`,
		`tandem_requests_total{code="200",model="writer",protocol="openai"} 1`,
	}
	var missing []string
	var text string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + s.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		text = string(b)
		missing = missing[:0]
		for _, w := range want {
			if !strings.Contains(text, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(missing) > 0 {
		var have []string
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, "tandem_openai_") || strings.Contains(l, `protocol="openai"`) {
				have = append(have, l)
			}
		}
		t.Errorf("metrics lack:\n%s\nhave:\n%s", strings.Join(missing, "\n"), strings.Join(have, "\n"))
	}
}
