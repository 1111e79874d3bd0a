package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// Encode writes msgs in format "yaml" (documents separated by "---") or
// "json" (one object as itself; none or several as an apiVersion v1 List
// of items). Field names are the lowerCamelCase names of the manifests and
// unset fields are left out. Decode reads both forms back.
func Encode(w io.Writer, format string, msgs []proto.Message) error {
	if format != "yaml" && format != "json" {
		return fmt.Errorf("unknown output format %q: want yaml or json", format)
	}
	items := make([]json.RawMessage, len(msgs))
	for i, m := range msgs {
		j, err := protojson.MarshalOptions{}.Marshal(m)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", m.ProtoReflect().Descriptor().Name(), err)
		}
		items[i] = j
	}
	var out bytes.Buffer
	if format == "yaml" {
		for i, j := range items {
			y, err := yaml.JSONToYAML(j)
			if err != nil {
				return err
			}
			if i > 0 {
				out.WriteString("---\n")
			}
			out.Write(y)
		}
	} else {
		var j []byte
		if len(items) == 1 {
			j = items[0]
		} else {
			var err error
			j, err = json.Marshal(struct {
				APIVersion string            `json:"apiVersion"`
				Kind       string            `json:"kind"`
				Items      []json.RawMessage `json:"items"`
			}{listAPIVersion, listKind, items})
			if err != nil {
				return err
			}
		}
		// protojson output varies its spacing on purpose: make it stable.
		if err := json.Indent(&out, j, "", "  "); err != nil {
			return err
		}
		out.WriteByte('\n')
	}
	_, err := w.Write(out.Bytes())
	return err
}
