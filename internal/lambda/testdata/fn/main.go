// Command fn is a Lambda function built with github.com/aws/aws-lambda-go,
// for tandem's tests: it answers API Gateway events (v1 and v2) and raw
// invocations with what it received, and fails, crashes, sleeps or fails
// its init on demand.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// Seen is what the function reports about an event.
type Seen struct {
	Shape      string              `json:"shape"`
	Method     string              `json:"method"`
	Path       string              `json:"path"`
	Query      map[string][]string `json:"query"`
	Header     map[string]string   `json:"header"`
	BodySHA256 string              `json:"body_sha256"`
	BodyLen    int                 `json:"body_len"`
	Base64     bool                `json:"base64"`
	RequestID  string              `json:"request_id"`
	ARN        string              `json:"arn"`
	Function   string              `json:"function"`
	DeadlineMs int64               `json:"deadline_ms"`
	PID        int                 `json:"pid"`
	Client     map[string]string   `json:"client,omitempty"`
}

func seen(ctx context.Context, shape string, body []byte, b64 bool) Seen {
	lc, _ := lambdacontext.FromContext(ctx)
	dl, _ := ctx.Deadline()
	sum := sha256.Sum256(body)
	s := Seen{Shape: shape, BodySHA256: hex.EncodeToString(sum[:]), BodyLen: len(body), Base64: b64,
		Function: os.Getenv("AWS_LAMBDA_FUNCTION_NAME"), DeadlineMs: dl.UnixMilli(), PID: os.Getpid()}
	if lc != nil {
		s.RequestID, s.ARN = lc.AwsRequestID, lc.InvokedFunctionArn
		s.Client = lc.ClientContext.Custom
	}
	return s
}

// act does what a path or op asks for; ok is false for an ordinary answer.
func act(ctx context.Context, op string, q map[string]string) (any, error, bool) {
	switch op {
	case "fail":
		return nil, errors.New("the handler failed on purpose"), true
	case "crash":
		os.Exit(3)
	case "sleep":
		ms, _ := strconv.Atoi(q["ms"])
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			time.Sleep(time.Duration(ms) * time.Millisecond) // overrun on purpose
		}
	}
	return nil, nil, false
}

func decode(s string, b64 bool) []byte {
	if !b64 {
		return []byte(s)
	}
	b, _ := base64.StdEncoding.DecodeString(s)
	return b
}

// invert flips every bit: the binary answer the tests compute apart.
func invert(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = ^c
	}
	return out
}

func handle(ctx context.Context, raw json.RawMessage) (any, error) {
	var probe struct {
		Version    string `json:"version"`
		HTTPMethod string `json:"httpMethod"`
		Op         string `json:"op"`
	}
	json.Unmarshal(raw, &probe)
	switch {
	case probe.Version == "2.0":
		var ev events.APIGatewayV2HTTPRequest
		if err := json.Unmarshal(raw, &ev); err != nil {
			return nil, err
		}
		body := decode(ev.Body, ev.IsBase64Encoded)
		last := path(ev.RawPath)
		if r, err, done := act(ctx, last, ev.QueryStringParameters); done {
			return r, err
		}
		switch last {
		case "string":
			return "plain string from the function", nil
		case "object":
			return map[string]any{"plain": "object", "n": 7}, nil
		case "binary":
			return events.APIGatewayV2HTTPResponse{StatusCode: 200, Headers: map[string]string{"Content-Type": "application/octet-stream"},
				Body: base64.StdEncoding.EncodeToString(invert(body)), IsBase64Encoded: true}, nil
		}
		s := seen(ctx, "v2", body, ev.IsBase64Encoded)
		s.Method, s.Path, s.Header = ev.RequestContext.HTTP.Method, ev.RawPath, ev.Headers
		s.Query = map[string][]string{}
		for k, v := range ev.QueryStringParameters {
			s.Query[k] = []string{v}
		}
		b, _ := json.Marshal(s)
		return events.APIGatewayV2HTTPResponse{StatusCode: status(ev.QueryStringParameters), Headers: map[string]string{"Content-Type": "application/json", "X-Fn": "v2"},
			Cookies: []string{"a=1; Path=/", "b=2"}, Body: string(b)}, nil
	case probe.HTTPMethod != "":
		var ev events.APIGatewayProxyRequest
		if err := json.Unmarshal(raw, &ev); err != nil {
			return nil, err
		}
		body := decode(ev.Body, ev.IsBase64Encoded)
		last := path(ev.Path)
		if r, err, done := act(ctx, last, ev.QueryStringParameters); done {
			return r, err
		}
		if last == "binary" {
			return events.APIGatewayProxyResponse{StatusCode: 200, Headers: map[string]string{"Content-Type": "application/octet-stream"},
				Body: base64.StdEncoding.EncodeToString(invert(body)), IsBase64Encoded: true}, nil
		}
		if last == "notproxy" {
			return map[string]string{"hello": "world"}, nil
		}
		s := seen(ctx, "v1", body, ev.IsBase64Encoded)
		s.Method, s.Path, s.Header, s.Query = ev.HTTPMethod, ev.Path, ev.Headers, ev.MultiValueQueryStringParameters
		b, _ := json.Marshal(s)
		return events.APIGatewayProxyResponse{StatusCode: status(ev.QueryStringParameters), Headers: map[string]string{"Content-Type": "application/json", "X-Fn": "v1"},
			MultiValueHeaders: map[string][]string{"X-Multi": {"one", "two"}}, Body: string(b)}, nil
	}
	// A raw invocation: {"op": ..., "numbers": [...]}.
	var in struct {
		Op      string            `json:"op"`
		Numbers []float64         `json:"numbers"`
		Query   map[string]string `json:"query"`
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, err
	}
	if r, err, done := act(ctx, in.Op, in.Query); done {
		return r, err
	}
	sum := 0.0
	for _, n := range in.Numbers {
		sum += n
	}
	return map[string]any{"sum": sum, "seen": seen(ctx, "raw", raw, false)}, nil
}

func path(p string) string {
	if i := bytes.LastIndexByte([]byte(p), '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

func status(q map[string]string) int {
	if c, err := strconv.Atoi(q["status"]); err == nil {
		return c
	}
	return http.StatusOK
}

func main() {
	switch os.Getenv("FN_INIT") {
	case "error":
		// What a runtime does when the function cannot load: report it
		// on the Runtime API, then wait to be stopped.
		body := `{"errorMessage":"cannot load the model: model.bin is missing","errorType":"Runtime.InitError"}`
		resp, err := http.Post("http://"+os.Getenv("AWS_LAMBDA_RUNTIME_API")+"/2018-06-01/runtime/init/error", "application/json", bytes.NewBufferString(body))
		if err == nil {
			resp.Body.Close()
		}
		time.Sleep(time.Hour)
	case "survive":
		survive()
	case "exit":
		os.Stderr.WriteString("fn: giving up before asking for an event\n")
		os.Exit(7)
	}
	lambda.Start(handle)
}

// survive is a runtime of its own that outlives its Runtime API: it asks
// for events with a plain HTTP client and, when the API is gone, keeps
// trying (as a runtime that retries would), so that only tandem can end it.
func survive() {
	api := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime/invocation/"
	for {
		resp, err := http.Get(api + "next")
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		resp.Body.Close()
		id := resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
		b, _ := json.Marshal(Seen{Shape: "survive", PID: os.Getpid()})
		out, _ := json.Marshal(events.APIGatewayProxyResponse{StatusCode: 200, Body: string(b)})
		if r, err := http.Post(api+id+"/response", "application/json", bytes.NewReader(out)); err == nil {
			r.Body.Close()
		}
	}
}
