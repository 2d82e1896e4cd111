// Command validate reads Kubernetes manifests (a `helm template` output) on stdin and
// checks each document against the API types of the Kubernetes version this module
// pins: strict decoding, so a misspelt or misplaced field, a wrong type or an unknown
// kind is an error, with the document's kind and name. Exit 1 if any document fails.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

func main() {
	codecs := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)
	decoder := codecs.UniversalDeserializer()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(os.Stdin))
	checked, failed := 0, 0
	for {
		document, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "reading manifests: %v\n", err)
			os.Exit(1)
		}
		if len(bytes.TrimSpace(stripComments(document))) == 0 {
			continue
		}
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		_ = yaml.Unmarshal(document, &head)
		checked++
		if _, _, err := decoder.Decode(document, nil, nil); err != nil {
			failed++
			fmt.Fprintf(os.Stderr, "%s %q: %v\n", head.Kind, head.Metadata.Name, err)
		}
	}
	fmt.Printf("%d manifests checked, %d invalid\n", checked, failed)
	if failed > 0 || checked == 0 {
		os.Exit(1)
	}
}

func stripComments(document []byte) []byte {
	var kept [][]byte
	for _, line := range bytes.Split(document, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			kept = append(kept, line)
		}
	}
	return bytes.Join(kept, []byte("\n"))
}
