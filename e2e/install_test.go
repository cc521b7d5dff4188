package e2e

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// startArgs runs the binary with args (a unit's or an image's command, its
// paths mapped to temporary ones, its listen address to a free loopback
// port) and waits until the server is ready.
func startArgs(t *testing.T, args []string) {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	cmd := exec.Command(binary, append(args, "--metrics-listen", "off", "--addr-file", addrFile)...)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	for {
		if b, _ := os.ReadFile(addrFile); len(b) > 0 {
			return
		}
		select {
		case <-exited:
			t.Fatalf("%v: exited: %s", args, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// mapPaths replaces the production paths of a command with a fresh data
// dir and policy file, and 0.0.0.0:8443 with a free loopback port.
func mapPaths(t *testing.T, args []string) []string {
	t.Helper()
	n := initDir(t)
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(policy, nil, 0o600)
	out := make([]string, 0, len(args))
	for _, a := range args {
		switch a {
		case "/var/lib/mayfly":
			a = n.dir
		case "/etc/mayfly/policy.yaml":
			a = policy
		case "0.0.0.0:8443":
			a = "127.0.0.1:0"
		}
		out = append(out, a)
	}
	return out
}

// The systemd unit's ExecStart is a command the binary accepts and runs.
func TestSystemdUnitStarts(t *testing.T) {
	b, err := os.ReadFile("../contrib/systemd/mayfly.service")
	if err != nil {
		t.Fatal(err)
	}
	var exec, reload string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ExecStart="); ok {
			exec = v
		}
		if v, ok := strings.CutPrefix(sc.Text(), "ExecReload="); ok {
			reload = v
		}
	}
	args := strings.Fields(exec)
	if len(args) < 2 || args[0] != "/usr/local/bin/mayfly" || !strings.Contains(reload, "-HUP") {
		t.Fatalf("ExecStart=%q ExecReload=%q", exec, reload)
	}
	for _, want := range []string{"User=mayfly", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/mayfly"} {
		if !strings.Contains(string(b), "\n"+want+"\n") {
			t.Errorf("unit lacks %s", want)
		}
	}
	startArgs(t, mapPaths(t, args[1:]))
}

// The Dockerfile builds a static binary (its build command, run here: no
// Docker engine is needed for that), runs it as a non-root user on a
// distroless base with the data dir as a volume, and its default command
// starts a server.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	for _, want := range []string{"FROM gcr.io/distroless/static", "USER 65532:65532", `VOLUME ["/var/lib/mayfly"]`} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
	// A named volume takes its owner from the image's directory (copied up
	// at its first mount); a VOLUME path the image lacks comes up owned by
	// root, where the non-root user cannot run init (moby/moby#34916). The
	// final stage must make /var/lib/mayfly, owned by that user, first.
	final := df[strings.LastIndex(df, "\nFROM "):]
	own := regexp.MustCompile(`(?m)^COPY --from=\S+ --chown=65532:65532 \S+ /var/lib/mayfly/?$`).FindStringIndex(final)
	if vol := strings.Index(final, `VOLUME ["/var/lib/mayfly"]`); own == nil || vol < 0 || own[0] > vol {
		t.Error("the final stage does not make /var/lib/mayfly owned by 65532:65532 before declaring it a VOLUME: a named volume would be root's, and init as the non-root user fails")
	}
	cmdLine := regexp.MustCompile(`(?m)^CMD (\[.*\])$`).FindStringSubmatch(df)
	if cmdLine == nil {
		t.Fatal("Dockerfile has no CMD")
	}
	var args []string
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(cmdLine[1], -1) {
		args = append(args, m[1])
	}
	startArgs(t, mapPaths(t, args))

	build := regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=0 go build .*) -o /out/mayfly (\./cmd/mayfly)$`).FindStringSubmatch(df)
	if build == nil {
		t.Fatal("Dockerfile has no `RUN CGO_ENABLED=0 go build … -o /out/mayfly ./cmd/mayfly`")
	}
	// A full rebuild with -trimpath takes minutes on a shared CI machine;
	// what makes the binary static is that no package of it needs cgo once
	// CGO_ENABLED=0, which go list answers from the same build settings.
	list := exec.Command("go", "list", "-deps", "-f", "{{if .CgoFiles}}{{.ImportPath}}{{end}}", build[2])
	list.Dir = ".."
	list.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("go list with CGO_ENABLED=0: %v\n%s", err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Fatalf("packages that need cgo, so no static binary for distroless/static: %s", s)
	}
	// The binary the tests run was built the same way by the toolchain's
	// default; on Linux, check it is statically linked when cgo is off.
	if runtime.GOOS == "linux" && os.Getenv("CGO_ENABLED") == "0" {
		f, err := elf.Open(binary)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Fatal("a CGO_ENABLED=0 binary is dynamically linked")
			}
		}
	}
}
