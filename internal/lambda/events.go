package lambda

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"

	"tandem/internal/manifest"
)

// The API Gateway names tandem's events carry (one account, one API, one
// stage: a gateway request is not routed by API Gateway resources).
const (
	AccountID = "000000000000"
	apiID     = "tandem"
	stageV1   = "$default"
	stageV2   = "$default"
)

// eventRequest is what an HTTP request through the gateway is made of,
// read once at the ingress.
type eventRequest struct {
	method   string
	path     string // unescaped, from /
	rawPath  string // as the client sent it
	rawQuery string
	header   http.Header
	host     string
	sourceIP string
	body     []byte
	id       string
	at       time.Time
}

// readEventRequest takes what an event needs from r (which the gateway
// forwarded: the path after /models/NAME, X-Forwarded-For and -Host).
func readEventRequest(r *http.Request, body []byte, id string, at time.Time) eventRequest {
	h := r.Header.Clone()
	for _, k := range []string{InvokeHeader, "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Traceparent", "Tracestate"} {
		delete(h, k)
	}
	host := r.Header.Get("X-Forwarded-Host")
	if host == "" {
		host = r.Host
	}
	h.Set("Host", host)
	src := ""
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		first, _, _ := strings.Cut(xff[0], ",")
		src = strings.TrimSpace(first)
	}
	if src == "" {
		src, _, _ = net.SplitHostPort(r.RemoteAddr)
	}
	return eventRequest{method: r.Method, path: r.URL.Path, rawPath: r.URL.EscapedPath(), rawQuery: r.URL.RawQuery,
		header: h, host: host, sourceIP: src, body: body, id: id, at: at}
}

// encodeBody returns the body as an event carries it: as text when it is
// UTF-8 of a textual media type (or has none), else base64.
func encodeBody(body []byte, contentType string) (string, bool) {
	if len(body) == 0 {
		return "", false
	}
	if utf8.Valid(body) && textual(contentType) {
		return string(body), false
	}
	return base64.StdEncoding.EncodeToString(body), true
}

// textual reports whether a media type is text (API Gateway HTTP APIs
// base64-encode every other body).
func textual(contentType string) bool {
	if contentType == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	switch {
	case strings.HasPrefix(mt, "text/"),
		strings.HasSuffix(mt, "+json"), strings.HasSuffix(mt, "+xml"):
		return true
	}
	switch mt {
	case "application/json", "application/xml", "application/javascript", "application/x-www-form-urlencoded",
		"application/graphql", "application/yaml", "application/x-ndjson":
		return true
	}
	return false
}

// event turns req into the JSON event of shape (manifest.EventAPIGWv1 or
// v2).
func event(shape string, req eventRequest) ([]byte, error) {
	if shape == manifest.EventAPIGWv2 {
		return json.Marshal(eventV2(req))
	}
	return json.Marshal(eventV1(req))
}

func eventV1(req eventRequest) events.APIGatewayProxyRequest {
	ev := events.APIGatewayProxyRequest{
		Resource:   "/{proxy+}",
		Path:       req.path,
		HTTPMethod: req.method,
		RequestContext: events.APIGatewayProxyRequestContext{
			AccountID:        AccountID,
			ResourceID:       "proxy",
			Stage:            stageV1,
			DomainName:       req.host,
			DomainPrefix:     domainPrefix(req.host),
			RequestID:        req.id,
			Protocol:         "HTTP/1.1",
			Identity:         events.APIGatewayRequestIdentity{SourceIP: req.sourceIP, UserAgent: req.header.Get("User-Agent")},
			ResourcePath:     "/{proxy+}",
			Path:             req.path,
			HTTPMethod:       req.method,
			RequestTime:      req.at.UTC().Format("02/Jan/2006:15:04:05 -0700"),
			RequestTimeEpoch: req.at.UnixMilli(),
			APIID:            apiID,
		},
	}
	if p := strings.TrimPrefix(req.path, "/"); p != "" {
		ev.PathParameters = map[string]string{"proxy": p}
	}
	if len(req.header) > 0 {
		ev.Headers = make(map[string]string, len(req.header))
		ev.MultiValueHeaders = make(map[string][]string, len(req.header))
		for k, vs := range req.header {
			ev.Headers[k] = vs[len(vs)-1]
			ev.MultiValueHeaders[k] = vs
		}
	}
	if q, err := url.ParseQuery(req.rawQuery); err == nil && len(q) > 0 {
		ev.QueryStringParameters = make(map[string]string, len(q))
		ev.MultiValueQueryStringParameters = q
		for k, vs := range q {
			ev.QueryStringParameters[k] = vs[len(vs)-1]
		}
	}
	ev.Body, ev.IsBase64Encoded = encodeBody(req.body, req.header.Get("Content-Type"))
	return ev
}

func eventV2(req eventRequest) events.APIGatewayV2HTTPRequest {
	ev := events.APIGatewayV2HTTPRequest{
		Version:        "2.0",
		RouteKey:       "$default",
		RawPath:        req.rawPath,
		RawQueryString: req.rawQuery,
		Headers:        make(map[string]string, len(req.header)),
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RouteKey:     "$default",
			AccountID:    AccountID,
			Stage:        stageV2,
			RequestID:    req.id,
			APIID:        apiID,
			DomainName:   req.host,
			DomainPrefix: domainPrefix(req.host),
			Time:         req.at.UTC().Format("02/Jan/2006:15:04:05 -0700"),
			TimeEpoch:    req.at.UnixMilli(),
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{
				Method: req.method, Path: req.path, Protocol: "HTTP/1.1",
				SourceIP: req.sourceIP, UserAgent: req.header.Get("User-Agent"),
			},
		},
	}
	// Payload format 2.0: lower-case header names, repeated values joined
	// with commas, cookies apart.
	for k, vs := range req.header {
		if k == "Cookie" {
			for _, v := range vs {
				for _, c := range strings.Split(v, ";") {
					if c = strings.TrimSpace(c); c != "" {
						ev.Cookies = append(ev.Cookies, c)
					}
				}
			}
			continue
		}
		ev.Headers[strings.ToLower(k)] = strings.Join(vs, ",")
	}
	if q, err := url.ParseQuery(req.rawQuery); err == nil && len(q) > 0 {
		ev.QueryStringParameters = make(map[string]string, len(q))
		for k, vs := range q {
			ev.QueryStringParameters[k] = strings.Join(vs, ",")
		}
	}
	ev.Body, ev.IsBase64Encoded = encodeBody(req.body, req.header.Get("Content-Type"))
	return ev
}

func domainPrefix(host string) string {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	p, _, _ := strings.Cut(h, ".")
	return p
}

// proxyResponse is an API Gateway proxy integration's answer, both shapes
// (v2 adds cookies). StatusCode is a pointer: an object without it is not
// a proxy response (payload format 2.0 then sends the object as the body).
type proxyResponse struct {
	StatusCode        *int                `json:"statusCode"`
	Headers           map[string]string   `json:"headers"`
	MultiValueHeaders map[string][]string `json:"multiValueHeaders"`
	Body              *string             `json:"body"`
	IsBase64Encoded   bool                `json:"isBase64Encoded"`
	Cookies           []string            `json:"cookies"`
}

// httpAnswer is an HTTP answer made from a function's result.
type httpAnswer struct {
	status int
	header http.Header
	body   []byte
}

// answer turns a function's result into the HTTP answer API Gateway would
// give for it, or says why the result is not a valid proxy response (API
// Gateway answers such a result 502).
func answer(shape string, payload []byte) (httpAnswer, error) {
	trimmed := bytes.TrimSpace(payload)
	var pr proxyResponse
	isObject := len(trimmed) > 0 && trimmed[0] == '{'
	if isObject {
		if err := json.Unmarshal(trimmed, &pr); err != nil {
			if shape != manifest.EventAPIGWv2 {
				return httpAnswer{}, fmt.Errorf("the function's result is not an API Gateway proxy response: %v", err)
			}
			pr = proxyResponse{}
		}
	}
	if pr.StatusCode == nil {
		if shape != manifest.EventAPIGWv2 {
			return httpAnswer{}, fmt.Errorf("the function's result is not an API Gateway proxy response: it has no statusCode (got %s)", excerpt(trimmed))
		}
		// Payload format 2.0: any other valid JSON is a 200 whose body
		// is that JSON (a string result is the body itself).
		if !json.Valid(trimmed) {
			return httpAnswer{}, fmt.Errorf("the function's result is not JSON (got %s)", excerpt(trimmed))
		}
		body := trimmed
		var s string
		if len(trimmed) > 0 && trimmed[0] == '"' && json.Unmarshal(trimmed, &s) == nil {
			body = []byte(s)
		}
		return httpAnswer{status: http.StatusOK, header: http.Header{"Content-Type": {"application/json"}}, body: body}, nil
	}
	code := *pr.StatusCode
	if code < 200 || code > 599 {
		return httpAnswer{}, fmt.Errorf("the function's result has statusCode %d, not an HTTP status", code)
	}
	a := httpAnswer{status: code, header: make(http.Header, len(pr.Headers)+len(pr.MultiValueHeaders)+1)}
	for k, vs := range pr.MultiValueHeaders {
		for _, v := range vs {
			a.header.Add(k, v)
		}
	}
	for k, v := range pr.Headers {
		if _, ok := pr.MultiValueHeaders[k]; !ok {
			a.header.Set(k, v)
		}
	}
	for _, c := range pr.Cookies {
		a.header.Add("Set-Cookie", c)
	}
	// The gateway frames the answer itself.
	for _, k := range []string{"Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Upgrade", "Trailer"} {
		a.header.Del(k)
	}
	if pr.Body != nil {
		if pr.IsBase64Encoded {
			b, err := base64.StdEncoding.DecodeString(*pr.Body)
			if err != nil {
				return httpAnswer{}, fmt.Errorf("the function's result says isBase64Encoded but its body is not base64: %v", err)
			}
			a.body = b
		} else {
			a.body = []byte(*pr.Body)
		}
	}
	return a, nil
}

func (a httpAnswer) write(w http.ResponseWriter) {
	h := w.Header()
	for k, v := range a.header {
		h[k] = v
	}
	h.Set("Content-Length", strconv.Itoa(len(a.body)))
	w.WriteHeader(a.status)
	w.Write(a.body)
}

// excerpt quotes at most 200 bytes of b for an error message.
func excerpt(b []byte) string {
	if len(b) > 200 {
		return strconv.Quote(string(b[:200])) + "..."
	}
	return strconv.Quote(string(b))
}
