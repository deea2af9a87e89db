// Package crdcheck validates RemediationRequests against the generated CRD
// (deploy/crd) the way the API server validates a create, without an API
// server: fast enough for a fuzz target's every input, so "every accepted
// signal can be written" is checked on each input the decoders accept, and
// it fails on exactly the objects that would come back 422 Invalid.
//
// It runs what the API server runs for a custom resource's create: the
// object's metadata (name, namespace, labels, annotations), the version's
// OpenAPI schema (types, enums, patterns, lengths, property and item
// counts, formats), list types, and the x-kubernetes-validations rules
// that do not compare with an old object (the transition rules, such as
// spec's immutability, apply to updates only). It also refuses an object
// whose JSON exceeds etcd's default request size, which no schema states
// but every cluster enforces.
//
// Signals builds the requests of a signal as the writer does
// (writer.Preview) and validates each; the command crdcheck/signals
// serves it to the decoders' fuzz targets over a pipe.
package crdcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/kube-openapi/pkg/validation/strfmt"
	"k8s.io/kube-openapi/pkg/validation/validate"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/stormweir/stormweir/pkg/apis/stormweir/v1alpha1"
)

// MaxObjectBytes is etcd's default request size limit (--max-request-bytes,
// 1.5 MiB): a larger object is refused by any cluster that keeps it.
const MaxObjectBytes = 3 << 19

// CRDFile is the generated RemediationRequest CRD, relative to the module
// root.
const CRDFile = "deploy/crd/stormweir.io_remediationrequests.yaml"

// Validator checks objects against one version of a CRD. It is not safe
// for concurrent use: the schema validator is built once and reused.
type Validator struct {
	apiVersion, kind string
	structural       *schema.Structural
	schema           createValidator
	cel              *cel.Validator
}

// createValidator is the OpenAPI schema validator the API server builds
// for every create (its ratcheting validator only differs on updates),
// built once here: the build is an eighth of a validation.
type createValidator struct{ *validate.SchemaValidator }

func (v createValidator) Validate(obj any, _ ...apiservervalidation.ValidationOption) *validate.Result {
	return v.SchemaValidator.Validate(obj)
}

// RemediationRequests returns the Validator of the generated
// RemediationRequest CRD's v1alpha1 version.
func RemediationRequests() (*Validator, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return nil, errors.New("crdcheck: cannot locate the module root")
	}
	return Load(filepath.Join(filepath.Dir(file), "..", "..", CRDFile), v1alpha1.GroupVersion.Version)
}

// Load returns the Validator of the CRD in file, for version.
func Load(file, version string) (*Validator, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading the CRD: %w", err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(data, &crd); err != nil {
		return nil, fmt.Errorf("decoding the CRD %s: %w", file, err)
	}
	for _, v := range crd.Spec.Versions {
		if v.Name != version {
			continue
		}
		if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
			return nil, fmt.Errorf("CRD %s version %s has no schema", crd.Name, version)
		}
		var props apiextensions.JSONSchemaProps
		if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, &props, nil); err != nil {
			return nil, fmt.Errorf("converting the schema of %s: %w", crd.Name, err)
		}
		structural, err := schema.NewStructural(&props)
		if err != nil {
			return nil, fmt.Errorf("schema of %s is not structural: %w", crd.Name, err)
		}
		_, openapi, err := apiservervalidation.NewSchemaValidator(&props)
		if err != nil {
			return nil, fmt.Errorf("schema validator of %s: %w", crd.Name, err)
		}
		return &Validator{
			apiVersion: crd.Spec.Group + "/" + version,
			kind:       crd.Spec.Names.Kind,
			structural: structural,
			schema:     createValidator{validate.NewSchemaValidator(openapi, nil, "", strfmt.Default)},
			cel:        cel.NewValidator(structural, true, celconfig.PerCallLimit),
		}, nil
	}
	return nil, fmt.Errorf("CRD %s has no version %s", crd.Name, version)
}

// Validate returns what the API server would refuse in a create of obj,
// nil when it would accept it. The object goes through JSON, as it does on
// the wire.
func (v *Validator) Validate(obj client.Object) error {
	data, err := json.Marshal(obj)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", obj.GetName(), err)
	}
	return v.ValidateJSON(data)
}

// ValidateJSON is Validate of an object as the JSON a client sends.
func (v *Validator) ValidateJSON(data []byte) error {
	var u map[string]any
	if err := utiljson.Unmarshal(data, &u); err != nil {
		return fmt.Errorf("decoding the object: %w", err)
	}
	obj := &unstructured.Unstructured{Object: u}
	if len(data) > MaxObjectBytes {
		return fmt.Errorf("%s %s is %d bytes, more than etcd's default limit of %d", v.kind, obj.GetName(), len(data), MaxObjectBytes)
	}
	var errs field.ErrorList
	if u["apiVersion"] != v.apiVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), u["apiVersion"], []string{v.apiVersion}))
	}
	if u["kind"] != v.kind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), u["kind"], []string{v.kind}))
	}
	errs = append(errs, apimachineryvalidation.ValidateObjectMetaAccessor(obj, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))...)
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, u, v.schema)...)
	errs = append(errs, objectmeta.Validate(context.Background(), nil, u, v.structural, false)...)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, v.structural, u)...)
	if len(errs) == 0 && v.cel != nil {
		celErrs, _ := v.cel.Validate(context.Background(), nil, v.structural, u, nil, celconfig.RuntimeCELCostBudget)
		errs = append(errs, celErrs...)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%s %s/%s is invalid: %w", v.kind, obj.GetNamespace(), obj.GetName(), errs.ToAggregate())
}
