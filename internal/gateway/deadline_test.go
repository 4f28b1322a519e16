package gateway_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"tandem/internal/controller"
)

// The OpenAI door answers a deadline shorter than the measured cold start
// in OpenAI's error shape, with Retry-After and the estimate, and uses a
// warm fallback when the deployment names one.
func TestOpenAI_DeadlineShorterThanColdStart(t *testing.T) {
	o := setupOpenAI(t)
	apply(t, o.ctrl, "name: cold\nruntime: {command: [x]}\nscaling: {idle_timeout: 100ms, max: 1}\nopenai: {}\n")
	waitStatus := func(what string, name string, ok func(*controller.Status) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			s, err := o.ctrl.Status(name)
			if err != nil {
				t.Fatal(err)
			}
			if ok(s) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v", what, s)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	atZero := func(s *controller.Status) bool { return s.Ready+s.Starting+s.Draining == 0 }
	const body = `{"model":"cold","messages":[]}`
	// Nothing measured yet: even a 1ns deadline waits for the start.
	if resp, b := o.post(t, "/v1/chat/completions", body, "X-Tandem-Deadline", "1ns"); resp.StatusCode != 200 {
		t.Fatalf("first request: %d %s", resp.StatusCode, b)
	}
	waitStatus("cold back to zero", "cold", atZero)
	resp, b := o.post(t, "/v1/chat/completions", body, "X-Tandem-Deadline", "1ns")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("1ns deadline, nothing warm: %d %s", resp.StatusCode, b)
	}
	e := decodeOAIErr(t, b).Error
	if string(e.Code) != `"cold_start_exceeds_deadline"` || !strings.Contains(e.Message, "1ns") {
		t.Errorf("error %+v", e)
	}
	est, err := time.ParseDuration(resp.Header.Get("X-Tandem-Cold-Start-Estimate"))
	if err != nil || est <= 0 || !strings.Contains(e.Message, est.String()) {
		t.Errorf("estimate header %q (%v), message %q", resp.Header.Get("X-Tandem-Cold-Start-Estimate"), err, e.Message)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra != int((est+time.Second-1)/time.Second) {
		t.Errorf("Retry-After %q for an estimate of %s", resp.Header.Get("Retry-After"), est)
	}

	// With a warm fallback (embed), the fallback answers.
	if resp, b := o.post(t, "/v1/embeddings", `{"model":"embed","input":"x"}`); resp.StatusCode != 200 {
		t.Fatalf("warming embed: %d %s", resp.StatusCode, b)
	}
	apply(t, o.ctrl, "name: cold\nruntime: {command: [x]}\nscaling: {idle_timeout: 100ms, max: 1}\nopenai: {}\nfallback: embed\n")
	waitStatus("cold back to zero", "cold", atZero)
	resp, b = o.post(t, "/v1/chat/completions", body, "X-Tandem-Deadline", "1ns")
	if resp.StatusCode != 200 || resp.Header.Get("X-Tandem-Fallback") != "embed" {
		t.Fatalf("with a warm fallback: %d %s %v", resp.StatusCode, b, resp.Header)
	}
}
