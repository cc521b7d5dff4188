// Package version says which mayfly this binary is: the module version, the
// VCS revision it was built from and the Go toolchain, all read from the
// build information the Go linker embeds (runtime/debug). It owns nothing
// else and must never read files, the environment or the network: what it
// reports is a property of the binary, the same for every caller.
//
// A release build (`go install …@v1.2.3`, or `go build` at a tagged commit
// since Go 1.24) carries its module version; a build from a working tree
// carries "(devel)" and, unless -buildvcs=false, the revision. Version
// reports "devel" with the short revision then, so that no output (the
// version command, /healthz, SARIF, mayfly_build_info) says "(devel)".
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Info is what the build information says about this binary.
type Info struct {
	// Version is the module version ("v1.2.3"), or "devel" (with
	// "+<revision>" when the revision is known) for a build from a
	// working tree.
	Version string `json:"version"`
	// Module is the main module's path.
	Module string `json:"module,omitempty"`
	// Revision is the VCS revision (a git commit), when known.
	Revision string `json:"revision,omitempty"`
	// Time is the revision's commit time (RFC 3339), when known.
	Time string `json:"time,omitempty"`
	// Modified reports a build from a tree with uncommitted changes.
	Modified bool `json:"modified,omitempty"`
	// GoVersion is the toolchain that built the binary.
	GoVersion string `json:"go"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}

// Get reads this binary's build information.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return fromBuildInfo(nil)
	}
	return fromBuildInfo(bi)
}

// fromBuildInfo derives Info from bi (nil: no build information, as in a
// binary built without module support).
func fromBuildInfo(bi *debug.BuildInfo) Info {
	i := Info{GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		i.Version = "devel"
		return i
	}
	if bi.GoVersion != "" {
		i.GoVersion = bi.GoVersion
	}
	i.Module = bi.Main.Path
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.time":
			i.Time = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	i.Version = bi.Main.Version
	if i.Version == "" || i.Version == "(devel)" {
		i.Version = "devel"
		if i.Revision != "" {
			i.Version += "+" + short(i.Revision)
			if i.Modified {
				i.Version += ".dirty"
			}
		}
	}
	return i
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

// String is the one line `mayfly --version` prints.
func (i Info) String() string {
	s := "mayfly " + i.Version
	if i.Revision != "" {
		s += " (" + short(i.Revision)
		if i.Modified {
			s += ", modified"
		}
		s += ")"
	}
	return fmt.Sprintf("%s %s %s", s, i.GoVersion, i.Platform)
}
