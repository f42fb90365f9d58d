package config

import (
	"fmt"
	"strings"
)

// ActionYAML renders action.yml from the options table. image is runs.image:
// "Dockerfile" on the main branch, a docker:// image in releases.
func ActionYAML(image string) string {
	var b strings.Builder
	b.WriteString(`# Generated from config/options.go by "go test ./config -update"; edit the table, not this file.
name: tagpush
description: Push one container image to many tags, fast and reliably — upload once, tag many, retry what is transient.
author: tagpush
branding:
  icon: upload-cloud
  color: blue
inputs:
`)
	for _, o := range Options() {
		fmt.Fprintf(&b, "  %s:\n    description: %s\n    required: %t\n", o.Name, yamlString(o.Description), o.Required)
		if o.Default != "" {
			fmt.Fprintf(&b, "    default: %s\n", yamlString(o.Default))
		}
	}
	b.WriteString("outputs:\n")
	for _, o := range Outputs() {
		fmt.Fprintf(&b, "  %s:\n    description: %s\n", o.Name, yamlString(o.Description))
	}
	fmt.Fprintf(&b, "runs:\n  using: docker\n  image: %s\n", yamlString(image))
	return b.String()
}

// PipeYAML renders pipe.yml, the Bitbucket Pipe's metadata, from the options table.
func PipeYAML(image string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Generated from config/options.go by "go test ./config -update"; edit the table, not this file.
name: tagpush
image: %s
description: Push one container image to many tags, fast and reliably — upload once, tag many, retry what is transient.
category: Deployment
repository: https://github.com/tagpush/tagpush
maintainer:
  name: tagpush
  website: https://github.com/tagpush/tagpush
vendor:
  name: tagpush
  website: https://github.com/tagpush/tagpush
tags:
  - docker
  - container
  - registry
  - push
variables:
`, yamlString(image))
	for _, o := range Options() {
		fmt.Fprintf(&b, "  - name: %s\n    description: %s\n    required: %t\n", o.Variable(), yamlString(o.Description), o.Required)
		if o.Default != "" {
			fmt.Fprintf(&b, "    default: %s\n", yamlString(o.Default))
		}
		if o.Secret {
			b.WriteString("    secret: true\n")
		}
	}
	return b.String()
}

// yamlString quotes s as a YAML double-quoted scalar.
func yamlString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}
