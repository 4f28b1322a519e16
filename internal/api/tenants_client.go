package api

import (
	"context"
	"net/http"
	"net/url"

	"tandem/internal/tenant"
)

// CreateTenant adds a tenant; req.Name names it.
func (c *Client) CreateTenant(ctx context.Context, req TenantRequest) (*TenantInfo, error) {
	var out TenantInfo
	return &out, c.do(ctx, http.MethodPost, "/v1/tenants", req, &out)
}

// UpdateTenant changes the fields req sets and keeps the others.
func (c *Client) UpdateTenant(ctx context.Context, name string, req TenantRequest) (*TenantInfo, error) {
	var out TenantInfo
	return &out, c.do(ctx, http.MethodPatch, "/v1/tenants/"+url.PathEscape(name), req, &out)
}

// Tenants lists every tenant with its usage.
func (c *Client) Tenants(ctx context.Context) ([]TenantInfo, error) {
	var out []TenantInfo
	return out, c.do(ctx, http.MethodGet, "/v1/tenants", nil, &out)
}

// Tenant returns one tenant with its usage.
func (c *Client) Tenant(ctx context.Context, name string) (*TenantInfo, error) {
	var out TenantInfo
	return &out, c.do(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(name), nil, &out)
}

// DeleteTenant removes a tenant and its keys.
func (c *Client) DeleteTenant(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/tenants/"+url.PathEscape(name), nil, nil)
}

// CreateKey makes a key for a tenant; the answer holds the key text, which
// the server does not keep.
func (c *Client) CreateKey(ctx context.Context, req KeyRequest) (*NewKey, error) {
	var out NewKey
	return &out, c.do(ctx, http.MethodPost, "/v1/keys", req, &out)
}

// Keys lists keys, of one tenant when tenant is not "" (never their text).
func (c *Client) Keys(ctx context.Context, tenantName string) ([]tenant.KeyInfo, error) {
	path := "/v1/keys"
	if tenantName != "" {
		path += "?tenant=" + url.QueryEscape(tenantName)
	}
	var out []tenant.KeyInfo
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// RevokeKey deletes a key; the gateway refuses it from the next request.
func (c *Client) RevokeKey(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/keys/"+url.PathEscape(id), nil, nil)
}
