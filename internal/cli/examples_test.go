package cli

import (
	"strings"
	"testing"
)

// TestExamples keeps every command's --help with an example.
func TestExamples(t *testing.T) {
	root := NewRoot()
	for _, c := range root.Commands() {
		for _, sub := range append(c.Commands(), c) {
			if !sub.Runnable() || sub.Hidden || sub.Name() == "help" {
				continue
			}
			if sub.Example == "" {
				t.Errorf("tandem %s has no Example", strings.TrimPrefix(sub.CommandPath(), "tandem "))
			}
		}
	}
}
