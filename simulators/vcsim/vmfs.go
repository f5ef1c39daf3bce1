package main

// VMFS datastores on SAN LUNs, so that a datastore's files reach another site only
// through the array's replication.
//
// The hosts of this simulator have one SAN identity (-san-url, -san-host: the array's
// name for them) and reach the array's data path over HTTPS (GET /san/<host> lists the
// LUNs presented to them with their naa ids; GET/PUT /san/<host>/<lun> read and write).
//
// On-LUN layout (a small stand-in for VMFS, written and read only here):
//
//	bytes 0..7    "DPVMFS1\n"
//	bytes 8..15   header length n (uint64, little endian)
//	bytes 16..16+n  JSON header: uuid, label, device (the naa id of the LUN it was
//	              written for: its signature), files [{path, size, extents}]; an extent
//	              is [file offset, length, LUN offset]; holes are zeros
//	from 1 MiB    the files' data extents, each aligned to 64 KiB
//
// A datastore made by CreateVmfsDatastore or ResignatureUnresolvedVmfsVolume_Task is a
// directory (vcsim serves datastores from directories) that the host writes back to its
// LUN: at power off of a VM on it and on POST /_vmfs {"op":"sync"}. Between two write
// backs the LUN holds the last one, as if the host had cached the writes. A power off
// whose LUN is no longer presented (fenced, failed over) writes nothing and succeeds. Before a write
// back each VM on the datastore gets a .vmx text holding its configuration, which
// RegisterVM_Task reads back (disks, their controller slots, NIC networks).
//
// A LUN whose header names another device (a CA destination or a snapshot has its own
// naa id) is an unresolved VMFS volume (QueryUnresolvedVmfsVolume[s]); resignaturing
// copies its files into a new datastore "snap-<8 hex>-<label>" and writes the new
// signature (uuid, device) to the LUN. Unlike ESX, the label on the LUN stays the
// original one, so a volume that goes back and forth keeps one label.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

type vmfsMount struct {
	ds     types.ManagedObjectReference
	device string
	dir    string
	uuid   string
	label  string
	mu     sync.Mutex // one write back at a time
	// what the last write back put on the LUN: unchanged files are not written again
	packed map[string]packedFile
	next   int64 // first free LUN offset after the packed extents
}

var vmfs = struct {
	sync.Mutex
	mounts map[string]*vmfsMount // by datastore name
	tmp    string
}{mounts: map[string]*vmfsMount{}}

func syncDatastore(name string) error {
	vmfs.Lock()
	m := vmfs.mounts[name]
	vmfs.Unlock()
	if m == nil {
		return fmt.Errorf("datastore %q is not a VMFS datastore on a LUN", name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, obj := range simulator.Map.All("VirtualMachine") {
		vm := obj.(*simulator.VirtualMachine)
		var p struct{ ds, rel string }
		if vm.Config == nil || !strings.HasPrefix(vm.Config.Files.VmPathName, "["+name+"]") {
			continue
		}
		p.rel = strings.TrimSpace(strings.TrimPrefix(vm.Config.Files.VmPathName, "["+name+"]"))
		if err := os.WriteFile(filepath.Join(m.dir, p.rel), []byte(vmxText(vm)), 0600); err != nil {
			return err
		}
	}
	lun, err := lunByID(m.device)
	if err != nil {
		return err
	}
	if lun.ReadOnly {
		return fmt.Errorf("LUN %d (%s) is read-only for %s", lun.Lun, lun.ID, san.host)
	}
	return pack(lun, m)
}

// syncVM writes back the datastore holding the VM's configuration, if it is on a LUN.
func syncVM(vm *simulator.VirtualMachine) types.BaseMethodFault {
	if vm.Config == nil {
		return nil
	}
	var p struct{ ds string }
	if i := strings.Index(vm.Config.Files.VmPathName, "]"); strings.HasPrefix(vm.Config.Files.VmPathName, "[") && i > 0 {
		p.ds = vm.Config.Files.VmPathName[1:i]
	}
	vmfs.Lock()
	_, onLUN := vmfs.mounts[p.ds]
	vmfs.Unlock()
	if !onLUN {
		return nil
	}
	if err := syncDatastore(p.ds); errors.Is(err, errNoLUN) {
		// the LUN is gone (fenced, failed over): the VM stops, nothing can be written
		logf("write back of %s skipped: %s", p.ds, err)
	} else if err != nil {
		logf("write back of %s: %s", p.ds, err)
		return &types.PlatformConfigFault{HostConfigFault: types.HostConfigFault{},
			Text: "write back of datastore " + p.ds + ": " + err.Error()}
	}
	return nil
}

func unresolved() ([]types.HostUnresolvedVmfsVolume, error) {
	luns, err := sanLUNs()
	if err != nil {
		return nil, err
	}
	var out []types.HostUnresolvedVmfsVolume
	for _, l := range luns {
		h, err := readHeader(l.Lun)
		if err != nil {
			return nil, err
		}
		if h == nil || h.Device == l.ID {
			continue
		}
		blocks := int32(l.Size >> 20)
		out = append(out, types.HostUnresolvedVmfsVolume{
			VmfsLabel: h.Label, VmfsUuid: h.UUID, TotalBlocks: blocks,
			ResolveStatus: types.HostUnresolvedVmfsVolumeResolveStatus{Resolvable: true},
			Extent: []types.HostUnresolvedVmfsExtent{{
				Device:     types.HostScsiDiskPartition{DiskName: l.ID, Partition: 1},
				DevicePath: "/vmfs/devices/disks/" + l.ID + ":1", VmfsUuid: h.UUID,
				IsHeadExtent: true, EndBlock: blocks - 1, Reason: "diskIdMismatch"}},
		})
	}
	return out, nil
}

// vmfsDSS adds the VMFS methods to a host's HostDatastoreSystem.
type vmfsDSS struct {
	simulator.HostDatastoreSystem // by value: the property collector digs out field 0
}

// vmfsHSS adds QueryUnresolvedVmfsVolume to a host's HostStorageSystem.
type vmfsHSS struct {
	simulator.HostStorageSystem
}

func (s *vmfsHSS) QueryUnresolvedVmfsVolume(ctx *simulator.Context, req *types.QueryUnresolvedVmfsVolume) soap.HasFault {
	vols, err := unresolved()
	if err != nil {
		return &methods.QueryUnresolvedVmfsVolumeBody{Fault_: simulator.Fault(err.Error(), &types.HostConfigFault{})}
	}
	return &methods.QueryUnresolvedVmfsVolumeBody{Res: &types.QueryUnresolvedVmfsVolumeResponse{Returnval: vols}}
}

func (d *vmfsDSS) QueryUnresolvedVmfsVolumes(ctx *simulator.Context, req *types.QueryUnresolvedVmfsVolumes) soap.HasFault {
	vols, err := unresolved()
	if err != nil {
		return &methods.QueryUnresolvedVmfsVolumesBody{Fault_: simulator.Fault(err.Error(), &types.HostConfigFault{})}
	}
	return &methods.QueryUnresolvedVmfsVolumesBody{Res: &types.QueryUnresolvedVmfsVolumesResponse{Returnval: vols}}
}

func (d *vmfsDSS) QueryAvailableDisksForVmfs(ctx *simulator.Context, req *types.QueryAvailableDisksForVmfs) soap.HasFault {
	luns, err := sanLUNs()
	if err != nil {
		return &methods.QueryAvailableDisksForVmfsBody{Fault_: simulator.Fault(err.Error(), &types.HostConfigFault{})}
	}
	var out []types.HostScsiDisk
	for _, l := range luns {
		if h, err := readHeader(l.Lun); err != nil || h != nil || l.ReadOnly {
			continue
		}
		disk := types.HostScsiDisk{Capacity: types.HostDiskDimensionsLba{BlockSize: 512, Block: l.Size / 512},
			DevicePath: "/vmfs/devices/disks/" + l.ID}
		disk.CanonicalName, disk.Uuid, disk.DisplayName, disk.LunType = l.ID, l.ID, "EVA "+l.ID, "disk"
		out = append(out, disk)
	}
	return &methods.QueryAvailableDisksForVmfsBody{Res: &types.QueryAvailableDisksForVmfsResponse{Returnval: out}}
}

// mount makes dir a datastore of this host, written back to the LUN `device`.
func (d *vmfsDSS) mount(ctx *simulator.Context, name, label, dir, device, uuid string) (types.ManagedObjectReference, types.BaseMethodFault) {
	res := d.HostDatastoreSystem.CreateLocalDatastore(ctx, &types.CreateLocalDatastore{Name: name, Path: dir})
	body := res.(*methods.CreateLocalDatastoreBody)
	if body.Fault_ != nil {
		return types.ManagedObjectReference{}, body.Fault_.VimFault().(types.BaseMethodFault)
	}
	ref := body.Res.Returnval
	if ds, ok := simulator.Map.Get(ref).(*simulator.Datastore); ok {
		ds.Summary.Type = "VMFS"
		shareWithAllHosts(ds, d.Host.Reference())
	}
	vmfs.Lock()
	vmfs.mounts[name] = &vmfsMount{ds: ref, device: device, dir: dir, uuid: uuid, label: label}
	vmfs.Unlock()
	return ref, nil
}

func (d *vmfsDSS) CreateVmfsDatastore(ctx *simulator.Context, req *types.CreateVmfsDatastore) soap.HasFault {
	fail := func(msg string, f types.BaseMethodFault) soap.HasFault {
		return &methods.CreateVmfsDatastoreBody{Fault_: simulator.Fault(msg, f)}
	}
	id := req.Spec.Vmfs.Extent.DiskName
	if id == "" {
		id = req.Spec.DiskUuid
	}
	lun, err := lunByID(id)
	if err != nil {
		return fail(err.Error(), &types.NotFound{})
	}
	name := req.Spec.Vmfs.VolumeName
	dir := filepath.Join(vmfs.tmp, "vmfs-"+name+"-"+newUUID()[:8])
	if err := os.MkdirAll(dir, 0700); err != nil {
		return fail(err.Error(), &types.HostConfigFault{})
	}
	uuid := newUUID()
	if err := writeHeader(lun.Lun, &vmfsHeader{UUID: uuid, Label: name, Device: lun.ID}); err != nil {
		return fail(err.Error(), &types.HostConfigFault{})
	}
	ref, fault := d.mount(ctx, name, name, dir, lun.ID, uuid)
	if fault != nil {
		return &methods.CreateVmfsDatastoreBody{Fault_: simulator.Fault("", fault)}
	}
	return &methods.CreateVmfsDatastoreBody{Res: &types.CreateVmfsDatastoreResponse{Returnval: ref}}
}

func (d *vmfsDSS) ResignatureUnresolvedVmfsVolumeTask(ctx *simulator.Context, req *types.ResignatureUnresolvedVmfsVolume_Task) soap.HasFault {
	task := simulator.CreateTask(d, "resignatureUnresolvedVmfsVolume", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		if len(req.ResolutionSpec.ExtentDevicePath) == 0 {
			return nil, &types.InvalidArgument{InvalidProperty: "resolutionSpec.extentDevicePath"}
		}
		lun, err := lunByID(req.ResolutionSpec.ExtentDevicePath[0])
		if err != nil {
			return nil, &types.NotFound{}
		}
		h, err := readHeader(lun.Lun)
		if err != nil || h == nil || h.Device == lun.ID {
			return nil, &types.InvalidArgument{InvalidProperty: "resolutionSpec.extentDevicePath"}
		}
		if lun.ReadOnly {
			return nil, &types.HostConfigFault{}
		}
		uuid := newUUID()
		name := "snap-" + uuid[:8] + "-" + h.Label
		dir := filepath.Join(vmfs.tmp, "vmfs-"+name)
		if err := os.MkdirAll(dir, 0700); err != nil {
			return nil, &types.HostConfigFault{}
		}
		if err := unpack(lun.Lun, h, dir); err != nil {
			logf("resignature %s: %s", lun.ID, err)
			return nil, &types.HostConfigFault{}
		}
		h.UUID, h.Device = uuid, lun.ID
		if err := writeHeader(lun.Lun, h); err != nil {
			return nil, &types.HostConfigFault{}
		}
		ref, fault := d.mount(ctx, name, h.Label, dir, lun.ID, uuid)
		if fault != nil {
			return nil, fault
		}
		return &types.HostResignatureRescanResult{Result: ref,
			Rescan: []types.HostVmfsRescanResult{{Host: d.Host.Reference()}}}, nil
	})
	return &methods.ResignatureUnresolvedVmfsVolume_TaskBody{
		Res: &types.ResignatureUnresolvedVmfsVolume_TaskResponse{Returnval: task.Run()}}
}

// shareWithAllHosts mounts ds on every other host: they all see the site's LUNs (one
// SAN identity), as the hosts of a cluster share a VMFS volume.
func shareWithAllHosts(ds *simulator.Datastore, first types.ManagedObjectReference) {
	for _, obj := range simulator.Map.All("HostSystem") {
		h := obj.(*simulator.HostSystem)
		if h.Self == first {
			continue
		}
		simulator.Map.AddReference(h, &h.Datastore, ds.Self)
		if h.Parent != nil {
			switch cr := simulator.Map.Get(*h.Parent).(type) {
			case *mo.ComputeResource:
				simulator.Map.AddReference(cr, &cr.Datastore, ds.Self)
			case *simulator.ClusterComputeResource:
				simulator.Map.AddReference(cr, &cr.Datastore, ds.Self)
			}
		}
		ds.Host = append(ds.Host, types.DatastoreHostMount{Key: h.Self, MountInfo: types.HostMountInfo{
			AccessMode: string(types.HostMountModeReadWrite), Mounted: types.NewBool(true), Accessible: types.NewBool(true)}})
	}
}

// forgetDatastore drops the write back of a destroyed datastore.
func forgetDatastore(name string) {
	vmfs.Lock()
	delete(vmfs.mounts, name)
	vmfs.Unlock()
}

func installVMFS() {
	for _, obj := range simulator.Map.All("HostSystem") {
		h := obj.(*simulator.HostSystem)
		if dss, ok := simulator.Map.Get(h.ConfigManager.DatastoreSystem.Reference()).(*simulator.HostDatastoreSystem); ok {
			simulator.Map.Put(&vmfsDSS{*dss})
		}
		if h.ConfigManager.StorageSystem != nil {
			if hss, ok := simulator.Map.Get(*h.ConfigManager.StorageSystem).(*simulator.HostStorageSystem); ok {
				simulator.Map.Put(&vmfsHSS{*hss})
			}
		}
	}
}

// serveVMFS: GET lists the LUN-backed datastores; POST {"op":"sync","datastore":name}
// writes one back to its LUN (the host flushing its writes).
func serveVMFS(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		vmfs.Lock()
		out := map[string]map[string]string{}
		for n, m := range vmfs.mounts {
			out[n] = map[string]string{"device": m.device, "dir": m.dir, "uuid": m.uuid}
		}
		vmfs.Unlock()
		writeJSON(w, 200, out)
	case http.MethodPost:
		var req struct {
			Op        string `json:"op"`
			Datastore string `json:"datastore"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Op != "sync" {
			writeJSON(w, 400, map[string]string{"error": "want {\"op\":\"sync\",\"datastore\":NAME}"})
			return
		}
		if err := syncDatastore(req.Datastore); err != nil {
			writeJSON(w, 409, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, 200, map[string]string{"synced": req.Datastore})
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}
