package onnx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// EnvLibrary names the environment variable that, when set, gives the path
// of ONNX Runtime's shared library.
const EnvLibrary = "TANDEM_ONNXRUNTIME_LIB"

// LibraryRelPath is where scripts/fetch-onnxruntime.sh puts the library,
// relative to the repository root.
const LibraryRelPath = ".cache/onnxruntime/libonnxruntime.so.1"

// ErrLibraryNotFound is returned when ONNX Runtime's shared library is in
// none of the places tandem looks.
var ErrLibraryNotFound = errors.New("ONNX Runtime library not found")

// FindLibrary returns the path of ONNX Runtime's shared library: $EnvLibrary
// when set; else LibraryRelPath under the folder of the tandem binary or
// one of its parents, then under the working directory or one of its
// parents, then under the source tree tandem was built from.
func FindLibrary() (string, error) {
	if p := os.Getenv(EnvLibrary); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: %s=%s: %v; run scripts/fetch-onnxruntime.sh or fix the variable", ErrLibraryNotFound, EnvLibrary, p, err)
		}
		return p, nil
	}
	var looked []string
	try := func(dir string) (string, bool) {
		for d := dir; ; d = filepath.Dir(d) {
			p := filepath.Join(d, LibraryRelPath)
			looked = append(looked, p)
			if _, err := os.Stat(p); err == nil {
				return p, true
			}
			if filepath.Dir(d) == d {
				return "", false
			}
		}
	}
	var starts []string
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		starts = append(starts, filepath.Dir(exe))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Join(filepath.Dir(file), "..", "..", ".."))
	}
	for _, s := range starts {
		if p, ok := try(s); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: run scripts/fetch-onnxruntime.sh (in the tandem repository) to fetch it, or set %s to the path of libonnxruntime.so.1 (looked for %s in: %s)",
		ErrLibraryNotFound, EnvLibrary, LibraryRelPath, strings.Join(dedupe(looked), ", "))
}

func dedupe(ps []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range ps {
		d := strings.TrimSuffix(p, "/"+LibraryRelPath)
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

var (
	initOnce sync.Once
	initErr  error
	libPath  string
)

// initialize loads ONNX Runtime into the process, once.
func initialize() error {
	initOnce.Do(func() {
		libPath, initErr = FindLibrary()
		if initErr != nil {
			return
		}
		ort.SetSharedLibraryPath(libPath)
		if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
			initErr = fmt.Errorf("loading ONNX Runtime from %s: %w", libPath, err)
		}
	})
	return initErr
}
