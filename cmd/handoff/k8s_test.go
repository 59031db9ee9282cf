package main

import (
	"bytes"
	"cmp"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/handoff-dev/handoff/internal/stack"
)

// k8sObject is what the Kubernetes manifest's checks read of each object.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		MinAvailable int `yaml:"minAvailable"`
		Template     struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				SecurityContext struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
				} `yaml:"securityContext"`
				Containers []struct {
					Name            string    `yaml:"name"`
					LivenessProbe   *k8sProbe `yaml:"livenessProbe"`
					StartupProbe    *k8sProbe `yaml:"startupProbe"`
					SecurityContext struct {
						AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
						ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
						Capabilities             struct {
							Drop []string `yaml:"drop"`
						} `yaml:"capabilities"`
					} `yaml:"securityContext"`
					Resources struct {
						Requests map[string]string `yaml:"requests"`
						Limits   map[string]string `yaml:"limits"`
					} `yaml:"resources"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// k8sProbe is what the checks read of a container's probe.
type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port int    `yaml:"port"`
	} `yaml:"httpGet"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
}

// budget is how long the kubelet lets the probe fail before it acts (Kubernetes' defaults:
// no initial delay, every 10 s, 3 failures).
func (p k8sProbe) budget() time.Duration {
	period, failures := cmp.Or(p.PeriodSeconds, 10), cmp.Or(p.FailureThreshold, 3)
	return time.Duration(p.InitialDelaySeconds+period*failures) * time.Second
}

// longestStart is how long a healthy part may take to start: the start wait for NATS and
// PostgreSQL, another copy's migrations (the advisory lock, polled for up to 5 minutes), then
// its own, whose locks are tried again for about 10 minutes (pgdb.MigrationLockTimeout).
const longestStart = stack.DefaultStartWait + 5*time.Minute + 10*time.Minute

// Every part on Kubernetes runs locked down (no root, no writes, no capabilities: with a
// database and NATS to talk to, no part writes a file), says what it needs and may use (a
// memory limit, which the process's collector keeps below: internal/gcpolicy), and keeps a
// copy up through node drains.
func TestKubernetesPartsRunLockedDownWithLimitsAndDisruptionBudgets(t *testing.T) {
	b, err := os.ReadFile("../../deploy/k8s/handoff.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var objs []k8sObject
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var o k8sObject
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("deploy/k8s/handoff.yaml: %v", err)
		}
		objs = append(objs, o)
	}
	budgets := map[string]bool{} // by the app label they select
	for _, o := range objs {
		if o.Kind == "PodDisruptionBudget" && o.Spec.MinAvailable >= 1 {
			budgets[o.Spec.Selector.MatchLabels["app"]] = true
		}
	}
	deployments := 0
	for _, o := range objs {
		if o.Kind != "Deployment" {
			continue
		}
		deployments++
		name, pod := o.Metadata.Name, o.Spec.Template.Spec
		if !budgets[o.Spec.Template.Metadata.Labels["app"]] {
			t.Errorf("%s: no PodDisruptionBudget keeps a copy up", name)
		}
		if !pod.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: may run as root", name)
		}
		for _, c := range pod.Containers {
			sc := c.SecurityContext
			if !sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
				t.Errorf("%s/%s: security context %+v; want a read-only root, no privilege escalation, every capability dropped", name, c.Name, sc)
			}
			if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
				t.Errorf("%s/%s: resources %+v; want CPU and memory requested and a memory limit", name, c.Name, c.Resources)
			}
			// /healthz answers once the part has started: until then only a startup probe
			// may judge it, with time for the longest start, or the kubelet kills a part
			// still waiting or migrating, again and again.
			if c.LivenessProbe != nil {
				killedAfter := c.LivenessProbe.budget()
				if c.StartupProbe != nil {
					killedAfter = max(killedAfter, c.StartupProbe.budget())
				}
				if killedAfter < longestStart {
					t.Errorf("%s/%s: a part still starting is killed after %s; want a startup probe allowing %s", name, c.Name, killedAfter, longestStart)
				}
			}
		}
	}
	if deployments == 0 {
		t.Fatal("deploy/k8s/handoff.yaml has no Deployment")
	}
}
