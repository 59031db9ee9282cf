package main

import (
	"os"
	"regexp"
	"slices"
	"testing"
)

// The deploy files are kept in step with the binary: every variable they set is one it reads,
// every flag they pass is one it has, and every split part gets what it cannot start without.
func TestDeployFilesUseTheBinarysVariablesAndFlags(t *testing.T) {
	known := map[string]bool{}
	for _, v := range envVar {
		known[v] = true
	}
	for _, v := range serviceDatabaseEnv {
		known[v] = true
	}
	flags := map[string]bool{"help": true}
	for f := range envVar {
		flags[f] = true
	}
	variable := regexp.MustCompile(`(?m)^\s+((?:HANDOFF_|NATS_|[A-Z]+_?DATABASE_)[A-Z_]*|DATABASE_URL):`)
	flag := regexp.MustCompile(`"-([a-z][a-z-]*)"`)
	for _, file := range []string{"../../deploy/docker-compose.yml", "../../deploy/k8s/handoff.yaml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var set []string
		for _, m := range variable.FindAllStringSubmatch(string(b), -1) {
			set = append(set, m[1])
			if !known[m[1]] {
				t.Errorf("%s sets %s, which handoff does not read", file, m[1])
			}
		}
		for _, need := range []string{"DATABASE_URL", "NATS_URL", "HANDOFF_JWT_KEYS", "HANDOFF_PICKUP_CODE_SECRET"} {
			if !slices.Contains(set, need) {
				t.Errorf("%s does not set %s, without which the split parts do not start", file, need)
			}
		}
		for _, m := range flag.FindAllStringSubmatch(string(b), -1) {
			// -c is nats-server's (its config file), in the compose file.
			if !flags[m[1]] && m[1] != "c" {
				t.Errorf("%s passes -%s, which handoff does not have", file, m[1])
			}
		}
	}
}
