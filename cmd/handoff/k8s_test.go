package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"go.yaml.in/yaml/v3"
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
					Name            string `yaml:"name"`
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
		}
	}
	if deployments == 0 {
		t.Fatal("deploy/k8s/handoff.yaml has no Deployment")
	}
}
