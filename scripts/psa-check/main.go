// psa-check evaluates every pod template in Kubernetes manifests against a Pod Security Standards
// level with k8s.io/pod-security-admission, the library the API server's admission plugin runs.
//
//	psa-check [-level restricted] [-version latest] manifest.yaml...
//
// It prints one JSON line per pod template ({"kind", "name", "allowed", "forbidden"}) and exits 1
// when any template is forbidden, 2 when a manifest cannot be read.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

type result struct {
	Kind      string   `json:"kind"`
	Name      string   `json:"name"`
	Allowed   bool     `json:"allowed"`
	Forbidden []string `json:"forbidden,omitempty"`
}

// podTemplate finds the pod template of a workload kind (nil for other kinds).
func podTemplate(doc map[string]interface{}) interface{} {
	spec, _ := doc["spec"].(map[string]interface{})
	switch doc["kind"] {
	case "Pod":
		return map[string]interface{}{"metadata": doc["metadata"], "spec": spec}
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController":
		return spec["template"]
	case "CronJob":
		jobTemplate, _ := spec["jobTemplate"].(map[string]interface{})
		jobSpec, _ := jobTemplate["spec"].(map[string]interface{})
		return jobSpec["template"]
	}
	return nil
}

func check(path string, evaluator policy.Evaluator, lv api.LevelVersion) ([]result, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	decoder := utilyaml.NewYAMLOrJSONDecoder(file, 4096)
	var results []result
	for {
		var doc map[string]interface{}
		if err := decoder.Decode(&doc); errors.Is(err, io.EOF) {
			return results, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		template := podTemplate(doc)
		if template == nil {
			continue
		}
		raw, err := json.Marshal(template)
		if err != nil {
			return nil, err
		}
		var pod corev1.PodTemplateSpec
		if err := json.Unmarshal(raw, &pod); err != nil {
			return nil, fmt.Errorf("%s: pod template: %w", path, err)
		}
		metadata, _ := doc["metadata"].(map[string]interface{})
		r := result{Kind: fmt.Sprint(doc["kind"]), Name: fmt.Sprint(metadata["name"]), Allowed: true}
		for _, c := range evaluator.EvaluatePod(lv, &pod.ObjectMeta, &pod.Spec) {
			if !c.Allowed {
				r.Allowed = false
				r.Forbidden = append(r.Forbidden, c.ForbiddenReason+": "+c.ForbiddenDetail)
			}
		}
		results = append(results, r)
	}
}

func main() {
	levelFlag := flag.String("level", "restricted", "Pod Security Standards level: baseline or restricted")
	versionFlag := flag.String("version", "latest", "policy version, e.g. v1.29 or latest")
	flag.Parse()
	level, err := api.ParseLevel(*levelFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	version, err := api.ParseVersion(*versionFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	status := 0
	out := json.NewEncoder(os.Stdout)
	for _, path := range flag.Args() {
		results, err := check(path, evaluator, api.LevelVersion{Level: level, Version: version})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		for _, r := range results {
			if !r.Allowed {
				status = 1
			}
			_ = out.Encode(r)
		}
	}
	os.Exit(status)
}
