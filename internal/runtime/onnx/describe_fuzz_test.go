package onnx

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzDescribe feeds model files, whole and mangled, to the ONNX reader: it
// must never panic, and what it accepts must be usable metadata.
func FuzzDescribe(f *testing.F) {
	files, _ := filepath.Glob("../../../models/*.onnx")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0x3a, 0x02, 0x5a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		md, err := describeBytes(data)
		if err != nil {
			return
		}
		if len(md.Inputs) == 0 || len(md.Outputs) == 0 {
			t.Fatalf("accepted metadata without inputs or outputs: %+v", md)
		}
		for _, in := range md.Inputs {
			if !in.Datatype.Supported() {
				t.Fatalf("accepted input %+v", in)
			}
		}
	})
}
