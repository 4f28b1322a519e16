package lambda

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"tandem/internal/manifest"
)

// forwarded is a request as the gateway forwards it to an ingress.
func forwarded(method, target, body string, h http.Header) *http.Request {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.Host = "127.0.0.1:41000"
	r.RemoteAddr = "127.0.0.1:50000"
	for k, vs := range h {
		r.Header[k] = vs
	}
	r.Header.Set("X-Forwarded-For", "203.0.113.7")
	r.Header.Set("X-Forwarded-Host", "api.example.com:8080")
	r.Header.Set(InvokeHeader, "forged")
	return r
}

var at = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func TestEvent_APIGatewayV1(t *testing.T) {
	h := http.Header{"Content-Type": {"application/json"}, "X-Multi": {"a", "b"}, "User-Agent": {"ua/1"}}
	body := `{"features": [5.1, 3.5, 1.4, 0.2]}`
	r := forwarded("POST", "/predict/one?x=1&x=2&y=%20z", body, h)
	raw, err := event(manifest.EventAPIGWv1, readEventRequest(r, []byte(body), "req-1", at))
	if err != nil {
		t.Fatal(err)
	}
	var ev events.APIGatewayProxyRequest
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatalf("the event does not decode as events.APIGatewayProxyRequest: %v\n%s", err, raw)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"httpMethod", ev.HTTPMethod, "POST"},
		{"path", ev.Path, "/predict/one"},
		{"resource", ev.Resource, "/{proxy+}"},
		{"pathParameters", ev.PathParameters, map[string]string{"proxy": "predict/one"}},
		{"body", ev.Body, body},
		{"isBase64Encoded", ev.IsBase64Encoded, false},
		{"queryStringParameters", ev.QueryStringParameters, map[string]string{"x": "2", "y": " z"}},
		{"multiValueQueryStringParameters", ev.MultiValueQueryStringParameters, map[string][]string{"x": {"1", "2"}, "y": {" z"}}},
		{"headers X-Multi (last)", ev.Headers["X-Multi"], "b"},
		{"multiValueHeaders X-Multi", ev.MultiValueHeaders["X-Multi"], []string{"a", "b"}},
		{"headers Host (the client's)", ev.Headers["Host"], "api.example.com:8080"},
		{"requestContext.requestId", ev.RequestContext.RequestID, "req-1"},
		{"requestContext.stage", ev.RequestContext.Stage, "$default"},
		{"requestContext.httpMethod", ev.RequestContext.HTTPMethod, "POST"},
		{"requestContext.identity.sourceIp", ev.RequestContext.Identity.SourceIP, "203.0.113.7"},
		{"requestContext.identity.userAgent", ev.RequestContext.Identity.UserAgent, "ua/1"},
		{"requestContext.requestTimeEpoch", ev.RequestContext.RequestTimeEpoch, at.UnixMilli()},
		{"requestContext.requestTime", ev.RequestContext.RequestTime, "02/Dec/2026:10:00:00 +0000"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.what, c.got, c.want)
		}
	}
	for _, k := range []string{InvokeHeader, "X-Forwarded-For", "X-Forwarded-Host"} {
		if _, ok := ev.MultiValueHeaders[k]; ok {
			t.Errorf("the event carries the gateway's header %s", k)
		}
	}
}

func TestEvent_APIGatewayV2(t *testing.T) {
	h := http.Header{"Content-Type": {"application/octet-stream"}, "X-Multi": {"a", "b"}, "Cookie": {"c1=v1; c2=v2"}}
	body := []byte{0, 1, 2, 0xff, 0xfe, 'x'}
	r := forwarded("PUT", "/blob/a%2Fb?x=1&x=2", string(body), h)
	raw, err := event(manifest.EventAPIGWv2, readEventRequest(r, body, "req-2", at))
	if err != nil {
		t.Fatal(err)
	}
	var ev events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatalf("the event does not decode as events.APIGatewayV2HTTPRequest: %v\n%s", err, raw)
	}
	got, _ := base64.StdEncoding.DecodeString(ev.Body)
	checks := []struct {
		what      string
		got, want any
	}{
		{"version", ev.Version, "2.0"},
		{"routeKey", ev.RouteKey, "$default"},
		{"rawPath", ev.RawPath, "/blob/a%2Fb"},
		{"rawQueryString", ev.RawQueryString, "x=1&x=2"},
		{"queryStringParameters (joined)", ev.QueryStringParameters, map[string]string{"x": "1,2"}},
		{"headers x-multi (joined, lower case)", ev.Headers["x-multi"], "a,b"},
		{"headers host", ev.Headers["host"], "api.example.com:8080"},
		{"cookies", ev.Cookies, []string{"c1=v1", "c2=v2"}},
		{"isBase64Encoded", ev.IsBase64Encoded, true},
		{"body", got, body},
		{"requestContext.http.method", ev.RequestContext.HTTP.Method, "PUT"},
		{"requestContext.http.path", ev.RequestContext.HTTP.Path, "/blob/a/b"},
		{"requestContext.http.sourceIp", ev.RequestContext.HTTP.SourceIP, "203.0.113.7"},
		{"requestContext.requestId", ev.RequestContext.RequestID, "req-2"},
		{"requestContext.stage", ev.RequestContext.Stage, "$default"},
		{"requestContext.domainName", ev.RequestContext.DomainName, "api.example.com:8080"},
		{"requestContext.timeEpoch", ev.RequestContext.TimeEpoch, at.UnixMilli()},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.what, c.got, c.want)
		}
	}
	if _, ok := ev.Headers["cookie"]; ok {
		t.Error("payload format 2.0 carries cookies in cookies, not in headers")
	}
	if _, ok := ev.Headers[strings.ToLower(InvokeHeader)]; ok {
		t.Error("the event carries the gateway's invoke header")
	}
}

func TestEncodeBody(t *testing.T) {
	for _, tc := range []struct {
		body, ct string
		b64      bool
	}{
		{"", "", false},
		{"hello", "", false},
		{`{"a":1}`, "application/json; charset=utf-8", false},
		{"a=1&b=2", "application/x-www-form-urlencoded", false},
		{"<x/>", "application/soap+xml", false},
		{"plain", "application/octet-stream", true},
		{"\xff\xfe", "text/plain", true},
		{"png", "image/png", true},
	} {
		_, b64 := encodeBody([]byte(tc.body), tc.ct)
		if b64 != tc.b64 {
			t.Errorf("body %q of type %q: base64 %v, want %v", tc.body, tc.ct, b64, tc.b64)
		}
	}
}

func TestAnswer(t *testing.T) {
	v1, _ := json.Marshal(events.APIGatewayProxyResponse{StatusCode: 201, Headers: map[string]string{"Content-Type": "text/plain", "X-One": "1", "Content-Length": "999"},
		MultiValueHeaders: map[string][]string{"Set-Cookie": {"a=1", "b=2"}}, Body: "made"})
	bin, _ := json.Marshal(events.APIGatewayProxyResponse{StatusCode: 200, Body: base64.StdEncoding.EncodeToString([]byte{0, 0xff}), IsBase64Encoded: true})
	v2, _ := json.Marshal(events.APIGatewayV2HTTPResponse{StatusCode: 202, Headers: map[string]string{"X-Two": "2"}, Cookies: []string{"c=3", "d=4"}, Body: "ok"})
	for _, tc := range []struct {
		name, shape, payload string
		status               int
		header               http.Header
		body                 string
		err                  string
	}{
		{"v1", manifest.EventAPIGWv1, string(v1), 201, http.Header{"Content-Type": {"text/plain"}, "X-One": {"1"}, "Set-Cookie": {"a=1", "b=2"}}, "made", ""},
		{"v1 binary", manifest.EventAPIGWv1, string(bin), 200, http.Header{}, "\x00\xff", ""},
		{"v1 not a proxy response", manifest.EventAPIGWv1, `{"hello":"world"}`, 0, nil, "", "no statusCode"},
		{"v1 string", manifest.EventAPIGWv1, `"hi"`, 0, nil, "", "no statusCode"},
		{"v1 bad base64", manifest.EventAPIGWv1, `{"statusCode":200,"body":"%%%","isBase64Encoded":true}`, 0, nil, "", "not base64"},
		{"v1 bad status", manifest.EventAPIGWv1, `{"statusCode":42}`, 0, nil, "", "statusCode 42"},
		{"v2", manifest.EventAPIGWv2, string(v2), 202, http.Header{"X-Two": {"2"}, "Set-Cookie": {"c=3", "d=4"}}, "ok", ""},
		{"v2 string", manifest.EventAPIGWv2, `"plain text"`, 200, http.Header{"Content-Type": {"application/json"}}, "plain text", ""},
		{"v2 object", manifest.EventAPIGWv2, `{"hello":"world"}`, 200, http.Header{"Content-Type": {"application/json"}}, `{"hello":"world"}`, ""},
		{"v2 number", manifest.EventAPIGWv2, `42`, 200, http.Header{"Content-Type": {"application/json"}}, `42`, ""},
		{"v2 not JSON", manifest.EventAPIGWv2, `nope`, 0, nil, "", "not JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := answer(tc.shape, []byte(tc.payload))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("want an error saying %q, got %v", tc.err, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.status != tc.status || string(a.body) != tc.body || !reflect.DeepEqual(a.header, tc.header) {
				t.Errorf("got %d %v %q, want %d %v %q", a.status, a.header, a.body, tc.status, tc.header, tc.body)
			}
		})
	}
}

// FuzzAnswer: any result, valid or not, gives an answer or an error,
// never a panic, and an answer's status is an HTTP status.
func FuzzAnswer(f *testing.F) {
	f.Add(`{"statusCode":200,"body":"x"}`, true)
	f.Add(`"s"`, true)
	f.Add(`{"statusCode":"200"}`, false)
	f.Fuzz(func(t *testing.T, payload string, v2 bool) {
		shape := manifest.EventAPIGWv1
		if v2 {
			shape = manifest.EventAPIGWv2
		}
		a, err := answer(shape, []byte(payload))
		if err == nil && (a.status < 200 || a.status > 599) {
			t.Fatalf("status %d", a.status)
		}
	})
}

// FuzzEvent: any request the gateway can forward makes an event that
// decodes as the aws-lambda-go type of its shape, with the body intact.
func FuzzEvent(f *testing.F) {
	f.Add("POST", "/a/b", "x=1&x=2", "text/plain", []byte("hello"))
	f.Add("GET", "/%2F", "a=%zz", "", []byte{})
	f.Add("PUT", "/", ";;", "application/json; charset=\xff", []byte{0xff, 0, 1})
	f.Fuzz(func(t *testing.T, method, path, query, ct string, body []byte) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Method = method
		r.URL.Path, r.URL.RawQuery = path, query
		r.Header.Set("Content-Type", ct)
		req := readEventRequest(r, body, "id", at)
		for _, shape := range []string{manifest.EventAPIGWv1, manifest.EventAPIGWv2} {
			raw, err := event(shape, req)
			if err != nil {
				t.Fatalf("%s: %v", shape, err)
			}
			var b string
			var b64 bool
			if shape == manifest.EventAPIGWv1 {
				var ev events.APIGatewayProxyRequest
				if err := json.Unmarshal(raw, &ev); err != nil {
					t.Fatalf("v1: %v", err)
				}
				b, b64 = ev.Body, ev.IsBase64Encoded
			} else {
				var ev events.APIGatewayV2HTTPRequest
				if err := json.Unmarshal(raw, &ev); err != nil {
					t.Fatalf("v2: %v", err)
				}
				b, b64 = ev.Body, ev.IsBase64Encoded
			}
			got := []byte(b)
			if b64 {
				got, _ = base64.StdEncoding.DecodeString(b)
			}
			if string(got) != string(body) {
				t.Fatalf("%s: body %q came out as %q", shape, body, got)
			}
		}
	})
}
