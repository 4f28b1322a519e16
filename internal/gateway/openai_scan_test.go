package gateway

import (
	"strings"
	"testing"
)

func TestUsageScanner(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		found bool
		want  usage
	}{
		{"answer", `{"id":"x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`, true, usage{5, 7}},
		{"spaces and nesting", "{\"usage\" :\n {\"prompt_tokens\": 3, \"prompt_tokens_details\": {\"cached_tokens\": 1}, \"completion_tokens\": 4}}", true, usage{3, 4}},
		{"embeddings", `{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":3,"total_tokens":3}}`, true, usage{3, 0}},
		{"null", `{"usage":null}`, false, usage{}},
		{"none", `{"choices":[{"text":"hi"}]}`, false, usage{}},
		{"in a string", `{"content":"\"usage\":{\"prompt_tokens\":9}","x":"usage"}`, false, usage{}},
		{"braces in strings", `{"usage":{"note":"} {\"}","prompt_tokens":2,"completion_tokens":1}}`, true, usage{2, 1}},
		{"stream, last wins", "data: {\"usage\":null}\n\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n", true, usage{5, 2}},
		{"too large", `{"usage":{"pad":"` + strings.Repeat("x", maxUsageBytes) + `","prompt_tokens":1}}`, false, usage{}},
		{"too large, then one", `{"usage":{"pad":"` + strings.Repeat("x", maxUsageBytes) + `"}} {"usage":{"prompt_tokens":4}}`, true, usage{4, 0}},
		{"not an object", `{"usage":"lots","usage":[1]}`, false, usage{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Whole, byte by byte, and split at every place in two.
			splits := [][]string{{tt.in}, strings.Split(tt.in, "")}
			if len(tt.in) < 400 {
				for i := 1; i < len(tt.in); i++ {
					splits = append(splits, []string{tt.in[:i], tt.in[i:]})
				}
			}
			for _, parts := range splits {
				var s usageScanner
				for _, p := range parts {
					s.Write([]byte(p))
				}
				if s.found != tt.found || s.last != tt.want {
					t.Fatalf("in %d parts (first %q): found %v %+v, want %v %+v", len(parts), parts[0], s.found, s.last, tt.found, tt.want)
				}
			}
		})
	}
}

func BenchmarkUsageScanner(b *testing.B) {
	chunk := []byte("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word\"},\"finish_reason\":null}]}\n\n")
	b.ReportAllocs()
	b.SetBytes(int64(len(chunk)))
	var s usageScanner
	for b.Loop() {
		s.Write(chunk)
	}
}

// FuzzUsageScanner checks that any answer, cut anywhere into two writes,
// reads as it does whole, and that nothing panics.
func FuzzUsageScanner(f *testing.F) {
	f.Add(`{"usage":{"prompt_tokens":5,"completion_tokens":7}}`, 9)
	f.Add("data: {\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5}}\n\n", 20)
	f.Add(`{"a":"\"usage\":{}","usage" : {"x":{"y":"}"},"completion_tokens":1}}`, 3)
	f.Fuzz(func(t *testing.T, in string, cut int) {
		var whole, split usageScanner
		whole.Write([]byte(in))
		if len(in) > 0 {
			cut = (cut%len(in) + len(in)) % len(in)
		} else {
			cut = 0
		}
		split.Write([]byte(in[:cut]))
		split.Write([]byte(in[cut:]))
		if whole.found != split.found || whole.last != split.last {
			t.Fatalf("whole: %v %+v; cut at %d: %v %+v", whole.found, whole.last, cut, split.found, split.last)
		}
	})
}
