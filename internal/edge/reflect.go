package edge

import (
	"fmt"
	"slices"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// servedFiles is what reflection at an edge describes: the files of the services it serves and
// everything they import, with every other service removed from them. A public service shares
// its .proto file with its admin and staff siblings (catalog.proto holds CatalogService and
// CatalogAdminService), and the edge must not advertise APIs it does not serve. The messages
// of those files stay: removing the ones only a hidden service uses would take a dependency
// analysis for no secret (the project is open source); the APIs are what is hidden.
//
// The files of the google.rpc error details (errorDetailFiles) are described too: the services'
// refusals carry them (a BadRequest naming the fields), no served file imports them, and a
// client that resolves an error's details through reflection (grpcurl) would otherwise show
// them as raw bytes.
func servedFiles(services []string) (*protoregistry.Files, error) {
	files := new(protoregistry.Files)
	var add func(fd protoreflect.FileDescriptor) error
	add = func(fd protoreflect.FileDescriptor) error {
		if _, err := files.FindFileByPath(fd.Path()); err == nil {
			return nil
		}
		imports := fd.Imports()
		for i := range imports.Len() {
			if err := add(imports.Get(i).FileDescriptor); err != nil {
				return err
			}
		}
		fdp := protodesc.ToFileDescriptorProto(fd) // a copy of its own
		n := len(fdp.Service)
		fdp.Service = slices.DeleteFunc(fdp.Service, func(s *descriptorpb.ServiceDescriptorProto) bool {
			return !slices.Contains(services, string(fd.Package().Append(protoreflect.Name(s.GetName()))))
		})
		if len(fdp.Service) != n {
			// Source locations index services by position; with some removed they would point
			// at the wrong ones.
			fdp.SourceCodeInfo = nil
		}
		out, err := protodesc.NewFile(fdp, files)
		if err != nil {
			return fmt.Errorf("edge: reflection file %s: %w", fd.Path(), err)
		}
		return files.RegisterFile(out)
	}
	for _, name := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			continue // not compiled in: reflection says it does not know it, as it would anyway
		}
		if err := add(d.ParentFile()); err != nil {
			return nil, err
		}
	}
	for _, fd := range errorDetailFiles {
		if err := add(fd); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// errorDetailFiles are the files of the error details the services send (rpcerr: BadRequest,
// ErrorInfo, RetryInfo), which reflection at an edge describes beside its services.
var errorDetailFiles = []protoreflect.FileDescriptor{errdetails.File_google_rpc_error_details_proto}
