package store

import (
	"strings"
	"testing"
)

func TestStore_GetJSON(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	type rec struct{ N int }
	var r rec
	if ok, err := s.GetJSON("b", "k", &r); ok || err != nil {
		t.Fatalf("missing bucket: %v %v", ok, err)
	}
	if err := s.PutJSON("b", "k", rec{N: 7}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.GetJSON("b", "other", &r); ok || err != nil {
		t.Fatalf("missing key: %v %v", ok, err)
	}
	if ok, err := s.GetJSON("b", "k", &r); !ok || err != nil || r.N != 7 {
		t.Fatalf("stored record: %v %v %+v", ok, err, r)
	}
	if err := s.PutJSON("b", "bad", "not an object"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetJSON("b", "bad", &r); err == nil || !strings.Contains(err.Error(), `"bad"`) {
		t.Fatalf("undecodable record: %v", err)
	}
}
