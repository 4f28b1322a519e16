package gateway

import "testing"

func TestParseFunction(t *testing.T) {
	for _, tc := range []struct{ in, name, qualifier string }{
		{"iris", "iris", ""},
		{"iris:$LATEST", "iris", "$LATEST"},
		{"arn:aws:lambda:us-east-1:000000000000:function:iris", "iris", ""},
		{"arn:aws:lambda:eu-west-1:123456789012:function:iris:prod", "iris", "prod"},
		{"123456789012:function:iris", "iris", ""},
		{"", "", ""},
	} {
		name, q := parseFunction(tc.in)
		if name != tc.name || q != tc.qualifier {
			t.Errorf("parseFunction(%q) = %q, %q; want %q, %q", tc.in, name, q, tc.name, tc.qualifier)
		}
	}
}
