// Package manifest reads and writes oneinfra manifests: multi-document YAML
// (or JSON) holding Cluster and Hypervisor resources of apiVersion
// oneinfra.io/v1alpha1, and the Cluster manifest of the original oneinfra
// (cluster.oneinfra.ereslibre.es/v1alpha1), which it converts.
//
// Decoding is strict: unknown fields, values of the wrong type and invalid
// resources are refused with an error that names the document and the
// field, and a manifest with any error yields no resources at all.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// docError is an error in one document, prefixed with where it is, like
// `demo.yaml document 2 (Cluster "demo")`. Its text is one line.
type docError struct {
	where string
	err   error
}

func (e *docError) Error() string {
	return e.where + ": " + oneLine(e.err.Error())
}

func (e *docError) Unwrap() error { return e.err }

// oneLine joins the lines of a message with "; ".
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// Decode reads the resources of a manifest. source names it in errors and
// in each Resource.Source ("SOURCE document N", counting non-empty
// documents from 1). Documents are split on "---" lines; empty ones are
// skipped. A JSON or YAML "List" (apiVersion v1) of resources is accepted
// too, as Encode writes it. Each resource is defaulted and validated, and
// the whole set is checked for duplicate names and overlapping VPN CIDRs.
// On any error Decode returns no resources and an error with one line per
// bad document.
func Decode(source string, data []byte) ([]*pb.Resource, error) {
	res, err := decodeSource(source, data)
	if err != nil {
		return nil, err
	}
	if err := checkSet(res); err != nil {
		return nil, err
	}
	return res, nil
}

// decodeSource decodes and validates every document of one source, without
// the checks across documents.
func decodeSource(source string, data []byte) ([]*pb.Resource, error) {
	var out []*pb.Resource
	var errs []error
	n := 0
	for _, doc := range splitDocuments(data) {
		j, err := yamlToJSON(doc)
		if err == nil && isNull(j) {
			continue // an empty document
		}
		n++
		where := fmt.Sprintf("%s document %d", source, n)
		if err != nil {
			errs = append(errs, &docError{where, fmt.Errorf("not valid YAML: %v", err)})
			continue
		}
		res, err := decodeDocument(where, j, true)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, res...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// splitDocuments splits YAML on document separator lines ("---", possibly
// followed by a space and a comment or content).
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		trimmed := bytes.TrimRight(line, "\r\n")
		if bytes.Equal(trimmed, []byte("---")) || bytes.HasPrefix(trimmed, []byte("--- ")) || bytes.HasPrefix(trimmed, []byte("---\t")) {
			docs = append(docs, cur)
			cur = append([]byte(nil), line[3:]...)
			continue
		}
		cur = append(cur, line...)
	}
	return append(docs, cur)
}

// yamlToJSON converts one YAML document to JSON, refusing duplicate keys.
// It never panics: a panic in the YAML library is an invalid document.
func yamlToJSON(doc []byte) (j []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			j, err = nil, fmt.Errorf("%v", r)
		}
	}()
	j, err = yaml.YAMLToJSONStrict(doc)
	if err != nil {
		msg := strings.TrimPrefix(oneLine(err.Error()), "error converting YAML to JSON: ")
		return nil, errors.New(strings.ReplaceAll(msg, "unmarshal errors:; ", ""))
	}
	return j, nil
}

func isNull(j []byte) bool { return string(bytes.TrimSpace(j)) == "null" }

// The kinds Decode knows, by apiVersion.
const (
	legacyAPIVersion = "cluster.oneinfra.ereslibre.es/v1alpha1"
	listAPIVersion   = "v1"
	listKind         = "List"
)

// decodeDocument decodes one document given as JSON. source names it
// ("SOURCE document N"); list says whether it may be a List of documents.
func decodeDocument(source string, j []byte, list bool) ([]*pb.Resource, error) {
	where := source
	var obj map[string]any
	if err := json.Unmarshal(j, &obj); err != nil || obj == nil {
		return nil, &docError{where, errors.New("not a manifest: want a mapping with apiVersion and kind")}
	}
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	name, _ := lookup(obj, "metadata", "name").(string)
	if kind != "" {
		if name != "" {
			where += fmt.Sprintf(" (%s %q)", kind, name)
		} else {
			where += " (" + kind + ")"
		}
	}
	fail := func(err error) ([]*pb.Resource, error) { return nil, &docError{where, err} }
	switch {
	case obj["apiVersion"] != nil && apiVersion == "":
		return fail(fmt.Errorf("apiVersion: must be a string, got %s", describeValue(obj["apiVersion"])))
	case obj["kind"] != nil && kind == "":
		return fail(fmt.Errorf("kind: must be a string, got %s", describeValue(obj["kind"])))
	case apiVersion == "":
		return fail(fmt.Errorf("missing apiVersion (want %s)", resources.APIVersion))
	case kind == "":
		return fail(fmt.Errorf("missing kind (want %s or %s)", resources.KindCluster, resources.KindHypervisor))
	case apiVersion == listAPIVersion && kind == listKind && list:
		return decodeList(source, where, obj)
	case apiVersion == resources.APIVersion && kind == resources.KindCluster:
		c := &pb.Cluster{}
		if err := decodeStrict(j, obj, c); err != nil {
			return fail(err)
		}
		clearServerFields(c.Metadata)
		c.Status = nil
		resources.DefaultCluster(c)
		if err := resources.ValidateCluster(c); err != nil {
			return fail(err)
		}
		return []*pb.Resource{{Source: source, Kind: &pb.Resource_Cluster{Cluster: c}}}, nil
	case apiVersion == resources.APIVersion && kind == resources.KindHypervisor:
		h := &pb.Hypervisor{}
		if err := decodeStrict(j, obj, h); err != nil {
			return fail(err)
		}
		clearServerFields(h.Metadata)
		h.Status = nil
		resources.DefaultHypervisor(h)
		if err := resources.ValidateHypervisor(h); err != nil {
			return fail(err)
		}
		return []*pb.Resource{{Source: source, Kind: &pb.Resource_Hypervisor{Hypervisor: h}}}, nil
	case apiVersion == resources.APIVersion && kind == resources.KindComponent:
		return fail(errors.New("components are read-only: oneinfra places them"))
	case apiVersion == legacyAPIVersion && kind == resources.KindCluster:
		c, err := decodeLegacyCluster(j, obj)
		if err != nil {
			return fail(err)
		}
		resources.DefaultCluster(c)
		if err := resources.ValidateCluster(c); err != nil {
			return fail(err)
		}
		return []*pb.Resource{{Source: source, Kind: &pb.Resource_Cluster{Cluster: c}}}, nil
	}
	return fail(fmt.Errorf("unknown apiVersion %q and kind %q: want apiVersion %s with kind %s or %s (or the original oneinfra's %s %s)",
		apiVersion, kind, resources.APIVersion, resources.KindCluster, resources.KindHypervisor, legacyAPIVersion, resources.KindCluster))
}

// decodeList decodes the items of a List document.
func decodeList(source, where string, obj map[string]any) ([]*pb.Resource, error) {
	if errs := checkSchema("", obj, schema{"apiVersion": nil, "kind": nil, "items": nil, "metadata": nil}); len(errs) > 0 {
		return nil, &docError{where, errors.New(strings.Join(errs, "; "))}
	}
	items, ok := obj["items"].([]any)
	if !ok && obj["items"] != nil {
		return nil, &docError{where, errors.New("items: must be a list")}
	}
	var out []*pb.Resource
	var errs []error
	for i, item := range items {
		j, err := json.Marshal(item)
		if err != nil {
			return nil, &docError{where, err}
		}
		res, err := decodeDocument(fmt.Sprintf("%s item %d", source, i+1), j, false)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, res...)
	}
	return out, errors.Join(errs...)
}

// lookup returns the value at a path of nested mappings, or nil.
func lookup(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// protoErrPrefix matches the decoration of protojson errors.
var protoErrPrefix = regexp.MustCompile(`^proto:[\s\x{a0}]*(syntax error )?(\(line \d+:\d+\):[\s\x{a0}]*)?`)

// decodeStrict checks obj (the JSON j, decoded) against the fields of m,
// then unmarshals j into m, refusing unknown fields.
func decodeStrict(j []byte, obj map[string]any, m proto.Message) error {
	if errs := checkMessage("", obj, m.ProtoReflect().Descriptor()); len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(j, m); err != nil {
		msg := protoErrPrefix.ReplaceAllString(err.Error(), "")
		return errors.New(strings.ReplaceAll(msg, "\u00a0", " "))
	}
	return nil
}

// clearServerFields clears the metadata that only oneinfra writes, so that
// `get -o yaml` output can be applied again.
func clearServerFields(m *pb.ObjectMeta) {
	if m == nil {
		return
	}
	m.Uid = ""
	m.CreateIndex = 0
	m.ModifyIndex = 0
	m.CreationTimestamp = nil
	m.DeletionTimestamp = nil
}

// describe names a resource for errors: `SOURCE (Cluster "demo")`.
func describe(r *pb.Resource) string {
	kind, name := kindName(r)
	return fmt.Sprintf("%s (%s %q)", r.GetSource(), kind, name)
}

func kindName(r *pb.Resource) (kind, name string) {
	switch k := r.GetKind().(type) {
	case *pb.Resource_Cluster:
		return resources.KindCluster, k.Cluster.GetMetadata().GetName()
	case *pb.Resource_Hypervisor:
		return resources.KindHypervisor, k.Hypervisor.GetMetadata().GetName()
	}
	return "", ""
}

// checkSet checks resources against each other: one name per kind, and no
// overlapping VPN CIDRs between VPN-enabled clusters.
func checkSet(res []*pb.Resource) error {
	var errs []error
	seen := map[string]*pb.Resource{}
	var vpns []*pb.Resource
	for _, r := range res {
		kind, name := kindName(r)
		if prev, ok := seen[kind+"/"+name]; ok {
			errs = append(errs, &docError{describe(r), fmt.Errorf("duplicate %s %q: also defined in %s", kind, name, prev.GetSource())})
			continue
		}
		seen[kind+"/"+name] = r
		vpn := r.GetCluster().GetSpec().GetVpn()
		if !vpn.GetEnabled() || vpn.GetCidr() == "" {
			continue
		}
		for _, o := range vpns {
			other := o.GetCluster().GetSpec().GetVpn().GetCidr()
			if overlap, _ := resources.CIDRsOverlap(vpn.GetCidr(), other); overlap {
				errs = append(errs, &docError{describe(r), fmt.Errorf("spec.vpn.cidr: %s overlaps the VPN CIDR %s of cluster %q (%s)",
					vpn.GetCidr(), other, o.GetCluster().GetMetadata().GetName(), o.GetSource())})
			}
		}
		vpns = append(vpns, r)
	}
	return errors.Join(errs...)
}
