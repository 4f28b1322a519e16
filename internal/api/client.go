package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"tandem/internal/controller"
	"tandem/internal/manifest"
	"tandem/internal/problem"
)

// Client talks to the control API.
type Client struct {
	Base string // for example http://127.0.0.1:8081
	HTTP *http.Client
}

// NewClient accepts "host:port" or a URL.
func NewClient(addr string) *Client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{Base: strings.TrimRight(addr, "/"), HTTP: http.DefaultClient}
}

// Error is an error answer of the API.
type Error struct {
	Status int
	Body   problem.Error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Body.Message)
	if e.Body.Code == "invalid_manifest" {
		var probs []manifest.Problem
		if raw, err := json.Marshal(e.Body.Details); err == nil && json.Unmarshal(raw, &probs) == nil && len(probs) > 0 {
			b.Reset()
			b.WriteString("invalid manifest:")
			for _, p := range probs {
				b.WriteString("\n  - " + p.String())
			}
		}
	}
	return b.String()
}

func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach tandem's control API at %s (is `tandem serve` running? set --admin or TANDEM_ADMIN): %w", c.Base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		var eb struct {
			Error problem.Error `json:"error"`
		}
		raw, _ := io.ReadAll(resp.Body)
		if json.Unmarshal(raw, &eb) != nil || eb.Error.Message == "" {
			eb.Error.Message = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(raw))
		}
		return &Error{Status: resp.StatusCode, Body: eb.Error}
	}
	if out == nil {
		return nil
	}
	if w, ok := out.(io.Writer); ok {
		_, err = io.Copy(w, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Deploy sends a manifest as written, with the folder it came from.
func (c *Client) Deploy(ctx context.Context, yamlText, baseDir string) (*DeployResponse, error) {
	var out DeployResponse
	err := c.do(ctx, http.MethodPost, "/v1/deployments", DeployRequest{Manifest: yamlText, BaseDir: baseDir}, &out)
	return &out, err
}

// DeployWith sends a manifest with traffic options (canary, tag, routes,
// shadow).
func (c *Client) DeployWith(ctx context.Context, yamlText, baseDir string, o *controller.DeployOptions) (*DeployResponse, error) {
	var out DeployResponse
	err := c.do(ctx, http.MethodPost, "/v1/deployments", DeployRequest{Manifest: yamlText, BaseDir: baseDir, Traffic: o}, &out)
	return &out, err
}

// Revisions lists a model's revisions, newest first.
func (c *Client) Revisions(ctx context.Context, name string) ([]controller.RevisionStatus, error) {
	var out []controller.RevisionStatus
	return out, c.do(ctx, http.MethodGet, "/v1/deployments/"+url.PathEscape(name)+"/revisions", nil, &out)
}

// Traffic returns a model's traffic status.
func (c *Client) Traffic(ctx context.Context, name string) (*controller.TrafficStatus, error) {
	var out controller.TrafficStatus
	return &out, c.do(ctx, http.MethodGet, "/v1/deployments/"+url.PathEscape(name)+"/traffic", nil, &out)
}

// ChangeTraffic changes a model's traffic by hand.
func (c *Client) ChangeTraffic(ctx context.Context, name string, ch controller.TrafficChange) (*controller.TrafficStatus, error) {
	var out controller.TrafficStatus
	return &out, c.do(ctx, http.MethodPost, "/v1/deployments/"+url.PathEscape(name)+"/traffic", ch, &out)
}

// Promote gives a revision (empty: the canary) all the traffic.
func (c *Client) Promote(ctx context.Context, name, revision string) (*controller.TrafficStatus, error) {
	var out controller.TrafficStatus
	return &out, c.do(ctx, http.MethodPost, "/v1/deployments/"+url.PathEscape(name)+"/promote", PromoteRequest{Revision: revision}, &out)
}

// Rollback sends all traffic back to the main revision.
func (c *Client) Rollback(ctx context.Context, name string) (*controller.TrafficStatus, error) {
	var out controller.TrafficStatus
	return &out, c.do(ctx, http.MethodPost, "/v1/deployments/"+url.PathEscape(name)+"/rollback", struct{}{}, &out)
}

// List returns every deployment's status.
func (c *Client) List(ctx context.Context) ([]*controller.Status, error) {
	var out []*controller.Status
	return out, c.do(ctx, http.MethodGet, "/v1/deployments", nil, &out)
}

// Status returns one deployment's status.
func (c *Client) Status(ctx context.Context, name string) (*controller.Status, error) {
	var out controller.Status
	return &out, c.do(ctx, http.MethodGet, "/v1/deployments/"+url.PathEscape(name), nil, &out)
}

// Delete removes a deployment.
func (c *Client) Delete(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/deployments/"+url.PathEscape(name), nil, nil)
}

// Logs copies a deployment's logs to w.
func (c *Client) Logs(ctx context.Context, name string, tail int, w io.Writer) error {
	return c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/deployments/%s/logs?tail=%d", url.PathEscape(name), tail), nil, w)
}

// FollowLogs copies a deployment's logs to w, then what its instances write
// as they write it, until ctx ends (then it returns nil) or the server ends
// the stream (the deployment was deleted, or tandem stopped).
func (c *Client) FollowLogs(ctx context.Context, name string, tail int, w io.Writer) error {
	err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/deployments/%s/logs?tail=%d&follow=1", url.PathEscape(name), tail), nil, w)
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// Info returns the server's addresses.
func (c *Client) Info(ctx context.Context) (*Info, error) {
	var out Info
	return &out, c.do(ctx, http.MethodGet, "/v1/info", nil, &out)
}
