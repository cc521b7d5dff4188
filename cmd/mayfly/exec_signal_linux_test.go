package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A signal sent to mayfly exec's process group (Ctrl-C in a terminal, a CI
// runner that kills the job's process group on cancel or timeout) must
// reach CMD once. When CMD shared exec's group and exec forwarded its own
// copy too, CMD got every such signal twice, and tools that take a second
// interrupt as "stop now, never mind the state" (terraform, packer, docker
// compose, …) aborted their graceful shutdown after a single Ctrl-C. A
// signal sent to exec alone must still reach CMD.
func TestExecGroupSignalReachesCMDOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	perl, err := exec.LookPath("perl")
	if err != nil {
		t.Skip("no perl")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mayfly")
	if out, err := exec.Command("go", "build", "-tags", buildTags, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	fs := newFakeServer(t)
	// As a job's runner starts it: a process group of its own, which the
	// runner signals.
	job := func(t *testing.T, c *exec.Cmd) func(syscall.Signal) error {
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		return func(s syscall.Signal) error { return syscall.Kill(-c.Process.Pid, s) }
	}
	// As a shell at a terminal starts it: in the terminal's foreground,
	// where the keys typed become signals to the group.
	tty := func(t *testing.T, c *exec.Cmd) func(syscall.Signal) error {
		master, slave := openPTY(t)
		c.Stdin = slave
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		return func(s syscall.Signal) error {
			_, err := master.WriteString(map[syscall.Signal]string{syscall.SIGINT: "\x03", syscall.SIGQUIT: "\x1c"}[s])
			return err
		}
	}
	tests := []struct {
		name  string
		start func(*testing.T, *exec.Cmd) func(syscall.Signal) error // sends to exec's group
		sig   syscall.Signal
		alone bool // sent to exec alone instead
	}{
		{"SIGINT to the job's group", job, syscall.SIGINT, false},
		{"SIGTERM to the job's group", job, syscall.SIGTERM, false},
		{"SIGTERM to exec alone", job, syscall.SIGTERM, true},
		{"Ctrl-C at a terminal", tty, syscall.SIGINT, false},
		// (At a terminal exec takes a SIGINT or SIGQUIT for the terminal's,
		// which CMD got too, and does not pass it on.)
		{"SIGTERM to exec alone at a terminal", tty, syscall.SIGTERM, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ready := filepath.Join(t.TempDir(), "ready")
			// CMD counts the signals it gets, then reports.
			// (perl counts every delivery; a shell trap only sets a flag.)
			script := `my $n = 0; $SIG{INT} = $SIG{TERM} = sub { $n++ }; open(my $f, ">", $ENV{READY}); close $f;
				my $end = time + 4; while (time < $end) { select(undef, undef, undef, 0.05) } print "signals=$n\n";`
			c := exec.Command(bin, "exec", "--grant", "deploy", "--", perl, "-e", script)
			c.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "MAYFLY_ADDR=" + fs.URL, "MAYFLY_ID_TOKEN=" + fakeJWT, "READY=" + ready}
			var out, errb strings.Builder
			c.Stdout, c.Stderr = &out, &errb
			toGroup := tc.start(t, c)
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if _, err := os.Stat(ready); err == nil {
					break
				}
				if time.Now().After(deadline) {
					_ = c.Process.Kill()
					t.Fatalf("CMD never started: %s", errb.String())
				}
			}
			// Five signals, well apart. (Two copies of one signal that
			// arrive before CMD runs merge into one, so one try may hide it.)
			const sent = 5
			for range sent {
				send := toGroup
				if tc.alone {
					send = func(s syscall.Signal) error { return syscall.Kill(c.Process.Pid, s) }
				}
				if err := send(tc.sig); err != nil {
					t.Fatal(err)
				}
				time.Sleep(300 * time.Millisecond)
			}
			_ = c.Wait()
			if got, want := strings.TrimSpace(out.String()), fmt.Sprintf("signals=%d", sent); got != want {
				t.Errorf("%d × %v: CMD reported %q, want %s (stderr %q)", sent, tc.sig, got, want, errb.String())
			}
		})
	}
}

// A runner that gives up on a job kills its whole process group: CMD, now
// in a group of its own, must not outlive exec and go on with the token.
func TestExecCMDDiesWithExec(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mayfly")
	if out, err := exec.Command("go", "build", "-tags", buildTags, "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	fs := newFakeServer(t)
	pidFile := filepath.Join(dir, "pid")
	c := exec.Command(bin, "exec", "--grant", "deploy", "--", "sh", "-c", `echo $$ > "$PIDFILE.tmp"; mv "$PIDFILE.tmp" "$PIDFILE"; exec sleep 30`)
	c.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "MAYFLY_ADDR=" + fs.URL, "MAYFLY_ID_TOKEN=" + fakeJWT, "PIDFILE=" + pidFile}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(pidFile); err == nil {
			if _, err := fmt.Sscan(string(b), &pid); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			_ = c.Process.Kill()
			t.Fatal("CMD never started")
		}
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if err := syscall.Kill(-c.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.Wait()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// Gone, or a zombie waiting for init: either way no longer running.
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("CMD (pid %d) still runs after exec was killed", pid)
		}
	}
}

// openPTY opens a pseudo-terminal pair, both closed when the test ends.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}
