package web_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// What the project says about Node.js is what its pinned npm packages need. Before, .ci/system-deps,
// the Makefile and this package's test said "Node.js 18+", and system-deps installed Debian 12's
// nodejs (18.20.4), but playwright-core 1.65.1 refuses to run below Node 20 ("Playwright requires
// Node.js 20 or higher") and @bufbuild/protoc-gen-es 2.17.0 declares node >=22: on a fresh
// Debian 12, `make test` failed in the browser test. Now .ci/node's NODE_MIN is the minimum every
// text names, at least playwright-core's, and its pinned NODE_VERSION, installed where the
// machine's Node.js is older, meets every bound package-lock.json declares.
func TestTheNodeVersionsNamedAreWhatThePinnedPackagesNeed(t *testing.T) {
	engines := lockedNodeEngines(t)
	enforced := engines["node_modules/playwright-core"] // checked when it loads, not only by npm
	if enforced == 0 {
		t.Fatal("package-lock.json pins no playwright-core with an engines bound")
	}
	named := regexp.MustCompile(`Node\.js (\d+)\+`)
	var texts []int
	for _, file := range []string{"../../.ci/system-deps", "../../.ci/node", "../../Makefile", "../../README.md", "browser_test.go"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Error(err)
			continue
		}
		for _, m := range named.FindAllSubmatch(b, -1) {
			n, _ := strconv.Atoi(string(m[1]))
			texts = append(texts, n)
			if n < enforced {
				t.Errorf("%s says Node.js %d+, but playwright-core (package-lock.json) refuses to run below %d", file, n, enforced)
			}
		}
	}

	script, err := os.ReadFile("../../.ci/node")
	if err != nil {
		t.Fatalf(".ci/node, which finds or installs the Node.js the packages run on: %v", err)
	}
	nodeMin, nodeVersion := scriptSetting(t, script, "NODE_MIN"), scriptSetting(t, script, "NODE_VERSION")
	min, _ := strconv.Atoi(nodeMin)
	if min < enforced {
		t.Errorf(".ci/node takes the machine's Node.js from %d up, but playwright-core refuses to run below %d", min, enforced)
	}
	for _, n := range texts {
		if n != min {
			t.Errorf("a text says Node.js %d+, but .ci/node's NODE_MIN is %d", n, min)
		}
	}
	pinned, _ := strconv.Atoi(strings.SplitN(nodeVersion, ".", 2)[0])
	for name, need := range engines {
		if need > pinned {
			t.Errorf("%s needs node >=%d, more than the Node.js %s .ci/node installs", name, need, nodeVersion)
		}
	}
}

// .ci/node: the machine's Node.js where it is new enough, and nothing fetched; else the pinned
// Node.js, fetched once with the machine's npm into .tmp/node and checked against the pinned
// SHA-512; a package that does not match is refused; with neither a new enough Node.js nor npm,
// exit 3 (no Node.js: the browser test skips) or 1 (one too old), naming what to install.
//
// The script runs from a copy of the repository's .ci in a temporary directory, with a PATH of
// the few tools it uses, a fake node and a fake npm whose `pack` hands over a test-made package.
func TestNodeScriptFetchesThePinnedNodeOnlyWhereTheMachinesIsTooOld(t *testing.T) {
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	if runtime.GOOS != "linux" || arch == "" {
		t.Skip(".ci/node pins Node.js for Linux x64 and arm64")
	}
	original, err := os.ReadFile("../../.ci/node")
	if err != nil {
		t.Fatal(err)
	}
	version := scriptSetting(t, original, "NODE_VERSION")
	min := scriptSetting(t, original, "NODE_MIN")

	// The package as the registry has it: package/bin/node.
	var tgz bytes.Buffer
	zw := gzip.NewWriter(&tgz)
	tw := tar.NewWriter(zw)
	node := "#!/bin/sh\necho v" + version + "\n"
	if err := tw.WriteHeader(&tar.Header{Name: "package/bin/node", Mode: 0o755, Size: int64(len(node)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(node)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum512(tgz.Bytes())
	pkg := filepath.Join(t.TempDir(), "node-linux-"+arch+"-"+version+".tgz")
	if err := os.WriteFile(pkg, tgz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	// What the pinned sum is, the test's package has; one not pinned is refused (below).
	pinnedLine := regexp.MustCompile(`(?m)^NODE_SHA512_` + arch + `=.*$`)
	matching := pinnedLine.ReplaceAll(original, []byte("NODE_SHA512_"+arch+"="+hex.EncodeToString(sum[:])))

	tools := t.TempDir()
	for _, name := range []string{"bash", "sh", "env", "dirname", "mktemp", "mkdir", "rm", "mv", "cp", "tar", "gzip", "sha512sum", "cut", "uname", "cat"} {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Skipf("needs %s", name)
		}
		if err := os.Symlink(p, filepath.Join(tools, name)); err != nil {
			t.Fatal(err)
		}
	}

	type result struct {
		out, stderr string
		code        int
		npmCalls    string
		repo        string
	}
	run := func(t *testing.T, script []byte, machineNode string, withNPM bool) result {
		t.Helper()
		repo := t.TempDir()
		if err := os.MkdirAll(filepath.Join(repo, ".ci"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(repo, ".ci", "node"), script, 0o755); err != nil {
			t.Fatal(err)
		}
		fake := t.TempDir()
		npmLog := filepath.Join(fake, "npm.log")
		if machineNode != "" {
			write(t, filepath.Join(fake, "node"), "#!/bin/sh\necho "+machineNode+"\n")
		}
		if withNPM {
			write(t, filepath.Join(fake, "npm"), "#!/bin/sh\necho \"npm $*\" >> "+npmLog+"\n"+
				"for a; do last=$a; done\n[ \"$1\" = pack ] && [ \"$last\" = node-linux-"+arch+"@"+version+" ] && cp "+pkg+" .\n")
		}
		cmd := exec.Command(filepath.Join(repo, ".ci", "node"))
		cmd.Env = []string{"PATH=" + fake + ":" + tools, "HOME=" + fake}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		calls, _ := os.ReadFile(npmLog)
		return result{strings.TrimSpace(stdout.String()), stderr.String(), code, string(calls), repo}
	}

	t.Run("the machine's is new enough", func(t *testing.T) {
		r := run(t, matching, "v"+min+".0.0", true)
		if r.code != 0 || !strings.HasSuffix(r.out, "/node") || strings.Contains(r.out, ".tmp") || r.npmCalls != "" {
			t.Fatalf("Node.js %s on the machine: exit %d, printed %q, npm asked %q; want the machine's node, nothing fetched\n%s", min, r.code, r.out, r.npmCalls, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(r.repo, ".tmp", "node")); err == nil {
			t.Error(".tmp/node was made though the machine's Node.js will do")
		}
	})
	t.Run("the machine's is too old", func(t *testing.T) {
		r := run(t, matching, "v18.20.4", true)
		want := filepath.Join(r.repo, ".tmp", "node", "bin", "node")
		if r.code != 0 || r.out != want {
			t.Fatalf("Node.js 18 on the machine: exit %d, printed %q; want %s\n%s", r.code, r.out, want, r.stderr)
		}
		if got, err := exec.Command(want, "--version").Output(); err != nil || strings.TrimSpace(string(got)) != "v"+version {
			t.Errorf("%s --version: %q, %v; want v%s", want, got, err, version)
		}
		if !strings.Contains(r.npmCalls, "pack") {
			t.Errorf("npm asked %q; want a pack of node-linux-%s@%s", r.npmCalls, arch, version)
		}
		// Once there, it is used without fetching again.
		again := exec.Command(filepath.Join(r.repo, ".ci", "node"))
		again.Env = []string{"PATH=" + tools}
		if out, err := again.Output(); err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("second run, no node and no npm on PATH: %q, %v; want %s", out, err, want)
		}
		entries, _ := os.ReadDir(filepath.Join(r.repo, ".tmp"))
		if len(entries) != 1 {
			t.Errorf(".tmp holds %d entries after the install; want node alone (no work dir left)", len(entries))
		}
		// One installed for an earlier pin is not used: with the machine's new enough, it goes.
		write(t, want, "#!/bin/sh\necho v21.0.0\n")
		machine := t.TempDir()
		write(t, filepath.Join(machine, "node"), "#!/bin/sh\necho v"+min+".1.0\n")
		stale := exec.Command(filepath.Join(r.repo, ".ci", "node"))
		stale.Env = []string{"PATH=" + filepath.Dir(want) + ":" + machine + ":" + tools}
		if out, err := stale.Output(); err != nil || strings.TrimSpace(string(out)) != filepath.Join(machine, "node") {
			t.Errorf("with an earlier pin's node in .tmp/node, first on PATH: %q, %v; want the machine's %s", out, err, filepath.Join(machine, "node"))
		}
		if _, err := os.Stat(want); err == nil {
			t.Error("an earlier pin's node was left in .tmp/node")
		}
	})
	t.Run("a package not matching the pinned SHA-512", func(t *testing.T) {
		r := run(t, original, "v18.20.4", true)
		if r.code != 1 || !strings.Contains(r.stderr, "refused") || !strings.Contains(r.stderr, "install Node.js "+min+" or newer") {
			t.Fatalf("a package not pinned: exit %d, said %q; want exit 1, refused, naming what to install", r.code, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(r.repo, ".tmp", "node")); err == nil {
			t.Error("a package not pinned was installed into .tmp/node")
		}
	})
	t.Run("too old and no npm", func(t *testing.T) {
		r := run(t, matching, "v18.20.4", false)
		if r.code != 1 || !strings.Contains(r.stderr, "v18.20.4") || !strings.Contains(r.stderr, "install Node.js "+min+" or newer") {
			t.Fatalf("Node.js 18, no npm: exit %d, said %q; want exit 1 naming the version found and what to install", r.code, r.stderr)
		}
	})
	t.Run("no node and no npm", func(t *testing.T) {
		r := run(t, matching, "", false)
		if r.code != 3 || !strings.Contains(r.stderr, "install Node.js "+min+" or newer") {
			t.Fatalf("no Node.js, no npm: exit %d, said %q; want exit 3 (the browser test skips) naming what to install", r.code, r.stderr)
		}
	})
}

// lockedNodeEngines is each package's engines.node lower bound (">=N") in package-lock.json,
// leaving out esbuild's per-platform binaries, which have esbuild's own bound.
func lockedNodeEngines(t *testing.T) map[string]int {
	t.Helper()
	b, err := os.ReadFile("package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	var lock struct {
		Packages map[string]struct {
			Optional bool              `json:"optional"`
			Engines  map[string]string `json:"engines"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		t.Fatal(err)
	}
	atLeast := regexp.MustCompile(`^>=\s*(\d+)`)
	engines := map[string]int{}
	for name, p := range lock.Packages {
		if m := atLeast.FindStringSubmatch(p.Engines["node"]); m != nil && !p.Optional {
			engines[name], _ = strconv.Atoi(m[1])
		}
	}
	return engines
}

func scriptSetting(t *testing.T, script []byte, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + `=(\S+)$`).FindSubmatch(script)
	if m == nil {
		t.Fatalf(".ci/node sets no %s", name)
	}
	return string(m[1])
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}
