package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	rev := "0123456789abcdef0123456789abcdef01234567"
	vcs := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev},
			{Key: "vcs.time", Value: "2026-12-04T19:00:00Z"}, {Key: "vcs.modified", Value: modified}}
	}
	tests := []struct {
		name     string
		bi       *debug.BuildInfo
		version  string
		line     string
		revision string
	}{
		{"release", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/mayfly-sh/mayfly", Version: "v1.2.3"}, Settings: vcs("false")},
			"v1.2.3", "mayfly v1.2.3 (0123456789ab) go1.26.8 ", rev},
		{"go install, no vcs", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/mayfly-sh/mayfly", Version: "v0.4.0"}},
			"v0.4.0", "mayfly v0.4.0 go1.26.8 ", ""},
		{"working tree", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/mayfly-sh/mayfly", Version: "(devel)"}, Settings: vcs("false")},
			"devel+0123456789ab", "mayfly devel+0123456789ab (0123456789ab) go1.26.8 ", rev},
		{"dirty tree", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/mayfly-sh/mayfly", Version: "(devel)"}, Settings: vcs("true")},
			"devel+0123456789ab.dirty", "mayfly devel+0123456789ab.dirty (0123456789ab, modified) go1.26.8 ", rev},
		{"-buildvcs=false", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/mayfly-sh/mayfly", Version: "(devel)"}},
			"devel", "mayfly devel go1.26.8 ", ""},
		{"no build info", nil, "devel", "mayfly devel " + runtime.Version() + " ", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := fromBuildInfo(tt.bi)
			if i.Version != tt.version || i.Revision != tt.revision {
				t.Errorf("version %q revision %q, want %q %q", i.Version, i.Revision, tt.version, tt.revision)
			}
			if strings.Contains(i.Version, "(devel)") {
				t.Errorf("version %q says (devel)", i.Version)
			}
			if !strings.HasPrefix(i.String(), tt.line) || !strings.HasSuffix(i.String(), runtime.GOOS+"/"+runtime.GOARCH) {
				t.Errorf("String() = %q, want prefix %q", i.String(), tt.line)
			}
		})
	}
}

// The test binary has build information: Get reads it.
func TestGet(t *testing.T) {
	i := Get()
	if i.GoVersion == "" || i.Version == "" || i.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Fatalf("Get() = %+v", i)
	}
}
