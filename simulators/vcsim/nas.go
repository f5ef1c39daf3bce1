package main

// NFS datastores from this machine. Stock vcsim's CreateNasDatastore takes the spec's
// localPath as a directory of the simulator's machine and names the datastore after its
// last component; vCenter names it localPath and mounts remoteHost:remotePath. Here a
// spec whose remoteHost is this machine (127.0.0.1, ::1, localhost) is served as vCenter
// would: the datastore is called localPath and shows the directory remotePath (the
// export, e.g. dpflow's published version), so the same client code works against a real
// NFS server. RemoveDatastore (missing in stock vcsim) unmounts it again, refused with
// ResourceInUse while a VM uses it.

import (
	"path"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// The methods are vmfsDSS's (vmfs.go): one wrapper per host's HostDatastoreSystem.

func loopback(host string) bool {
	return host == "127.0.0.1" || host == "::1" || host == "localhost"
}

func (d *vmfsDSS) CreateNasDatastore(ctx *simulator.Context, c *types.CreateNasDatastore) soap.HasFault {
	if !loopback(c.Spec.RemoteHost) {
		return d.HostDatastoreSystem.CreateNasDatastore(ctx, c)
	}
	name := c.Spec.LocalPath
	if path.Base(c.Spec.RemotePath) != name {
		return &methods.CreateNasDatastoreBody{Fault_: simulator.Fault(
			"dpflow-vcsim: a local export must end in the datastore's name",
			&types.InvalidArgument{InvalidProperty: "spec.remotePath"})}
	}
	spec := c.Spec
	spec.LocalPath = c.Spec.RemotePath // stock vcsim: the directory, named by its base
	res := d.HostDatastoreSystem.CreateNasDatastore(ctx, &types.CreateNasDatastore{This: c.This, Spec: spec})
	if body, ok := res.(*methods.CreateNasDatastoreBody); ok && body.Res != nil {
		if ds, ok := simulator.Map.Get(body.Res.Returnval).(*simulator.Datastore); ok {
			ds.Summary.Url = "ds:///vmfs/volumes/" + name + "/"
			if nas, ok := ds.Info.(*types.NasDatastoreInfo); ok {
				nas.Nas.Name = name
				// keep Info.Url = the directory: datastoreByName/localPath read files there
			}
			ds.Host = []types.DatastoreHostMount{{Key: d.Host.Self, MountInfo: types.HostMountInfo{
				Path: c.Spec.RemotePath, AccessMode: string(types.HostMountModeReadWrite),
				Mounted: types.NewBool(true), Accessible: types.NewBool(true)}}}
		}
	}
	return res
}

func (d *vmfsDSS) RemoveDatastore(ctx *simulator.Context, req *types.RemoveDatastore) soap.HasFault {
	body := &methods.RemoveDatastoreBody{}
	ds, ok := simulator.Map.Get(req.Datastore).(*simulator.Datastore)
	if !ok {
		body.Fault_ = simulator.Fault("", &types.ManagedObjectNotFound{Obj: req.Datastore})
		return body
	}
	for _, obj := range simulator.Map.All("VirtualMachine") {
		vm := obj.(*simulator.VirtualMachine)
		for _, ref := range vm.Datastore {
			if ref == ds.Self {
				body.Fault_ = simulator.Fault("", &types.ResourceInUse{Type: ds.Self.Type, Name: ds.Name})
				return body
			}
		}
	}
	// d is locked by the dispatcher (a second lock would deadlock): edited directly
	kept := d.Datastore[:0]
	for _, ref := range d.Datastore {
		if ref != ds.Self {
			kept = append(kept, ref)
		}
	}
	d.Datastore = kept
	host := simulator.Map.Get(d.Host.Self).(*simulator.HostSystem)
	simulator.Map.RemoveReference(host, &host.Datastore, ds.Self)
	for _, e := range simulator.Map.All("ClusterComputeResource") {
		cr := e.(*simulator.ClusterComputeResource)
		simulator.Map.RemoveReference(cr, &cr.Datastore, ds.Self)
	}
	for _, e := range simulator.Map.All("Datacenter") {
		dc := e.(*simulator.Datacenter)
		if f, ok := simulator.Map.Get(dc.DatastoreFolder).(*simulator.Folder); ok {
			for i, c := range f.ChildEntity {
				if c == ds.Self {
					f.ChildEntity = append(f.ChildEntity[:i], f.ChildEntity[i+1:]...)
					break
				}
			}
		}
		simulator.Map.RemoveReference(dc, &dc.Datastore, ds.Self)
	}
	simulator.Map.Remove(ds.Self)
	body.Res = &types.RemoveDatastoreResponse{}
	return body
}
