package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"tandem/internal/jobs"
)

// Jobs lists asynchronous jobs, newest first (GET /v1/jobs): status and
// model filter ("" = any), limit bounds the count (0 = all).
func (c *Client) Jobs(ctx context.Context, status, model string, limit int) ([]*jobs.Job, error) {
	q := url.Values{}
	if status != "" {
		q.Set("status", status)
	}
	if model != "" {
		q.Set("model", model)
	}
	q.Set("limit", strconv.Itoa(limit))
	var out []*jobs.Job
	err := c.do(ctx, http.MethodGet, "/v1/jobs?"+q.Encode(), nil, &out)
	return out, err
}

// Job returns one asynchronous job with its result (GET /v1/jobs/{id}).
func (c *Client) Job(ctx context.Context, id string) (*jobs.Job, error) {
	var out jobs.Job
	err := c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id), nil, &out)
	return &out, err
}
