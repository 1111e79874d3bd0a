package manifest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode checks that Decode never panics, and that whatever it accepts
// encodes (as YAML and as JSON) to something it decodes to the same value.
func FuzzDecode(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	for _, s := range []string{
		"", "---", "hello", "apiVersion: [oops",
		clusterHead + "spec: {controlPlane: {replicas: 9}}\n",
		clusterHead + "spec: {vpn: {enabled: true, cidr: 10.1.0.0/24}, apiServer: {extraSANs: ['*.a.b', '::1']}}\n",
		hvHead + "spec: {address: 10.0.0.1, public: true, publicAddress: 1.2.3.4, portRange: 2000-2015}\n",
		`{"apiVersion":"v1","kind":"List","items":[]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Decode("fuzz", data)
		if err != nil {
			if res != nil {
				t.Fatalf("resources returned with error %v", err)
			}
			return
		}
		for _, format := range []string{"yaml", "json"} {
			var buf bytes.Buffer
			if err := Encode(&buf, format, toMessages(res)); err != nil {
				t.Fatalf("Encode(%s): %v", format, err)
			}
			again, err := Decode("again", buf.Bytes())
			if err != nil {
				t.Fatalf("decoding the %s encoding: %v\ninput:\n%s\nencoded:\n%s", format, err, data, buf.String())
			}
			if !sameResources(res, again) {
				t.Fatalf("%s round trip differs:\n%v\n%v", format, res, again)
			}
		}
	})
}
