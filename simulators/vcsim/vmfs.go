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
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	vmfsMagic  = "DPVMFS1\n"
	vmfsHeadSz = 1 << 20
	vmfsAlign  = 64 << 10
)

type sanLUN struct {
	Lun      int    `json:"lun"`
	Size     int64  `json:"size"`
	ReadOnly bool   `json:"read_only"`
	ID       string `json:"id"`
}

type vmfsFile struct {
	Path    string     `json:"path"`
	Size    int64      `json:"size"`
	Extents [][3]int64 `json:"extents"`
}

type vmfsHeader struct {
	UUID   string     `json:"uuid"`
	Label  string     `json:"label"`
	Device string     `json:"device"`
	Files  []vmfsFile `json:"files"`
}

type vmfsMount struct {
	ds     types.ManagedObjectReference
	device string
	dir    string
	uuid   string
	label  string
	mu sync.Mutex // one write back at a time
	// what the last write back put on the LUN: unchanged files are not written again
	packed map[string]packedFile
	next   int64 // first free LUN offset after the packed extents
}

type packedFile struct {
	size, mtime int64
	file        vmfsFile
}

var san struct {
	url, host, user, password string
	client                    *http.Client
}

var vmfs = struct {
	sync.Mutex
	mounts map[string]*vmfsMount // by datastore name
	tmp    string
}{mounts: map[string]*vmfsMount{}}

func configureSAN(url, host, user, password, caFile, tmp string) error {
	san.url, san.host, san.user, san.password = strings.TrimRight(url, "/"), host, user, password
	vmfs.tmp = tmp
	pool := x509.NewCertPool()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		pool.AppendCertsFromPEM(pem)
	}
	san.client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return nil
}

func sanDo(method, p string, body []byte) ([]byte, error) {
	if san.client == nil {
		return nil, fmt.Errorf("this host has no SAN (start with -san-url)")
	}
	req, err := http.NewRequest(method, san.url+p, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(san.user, san.password)
	resp, err := san.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("SAN %s %s: HTTP %d %s", method, p, resp.StatusCode, out)
	}
	return out, err
}

func sanLUNs() ([]sanLUN, error) {
	out, err := sanDo("GET", "/san/"+san.host, nil)
	if err != nil {
		return nil, err
	}
	var luns []sanLUN
	return luns, json.Unmarshal(out, &luns)
}

func sanRead(lun int, off, n int64) ([]byte, error) {
	return sanDo("GET", fmt.Sprintf("/san/%s/%d?offset=%d&length=%d", san.host, lun, off, n), nil)
}

func sanWrite(lun int, off int64, data []byte) error {
	_, err := sanDo("PUT", fmt.Sprintf("/san/%s/%d?offset=%d", san.host, lun, off), data)
	return err
}

func lunByID(id string) (*sanLUN, error) {
	luns, err := sanLUNs()
	if err != nil {
		return nil, err
	}
	for i := range luns {
		if luns[i].ID == id || "/vmfs/devices/disks/"+luns[i].ID+":1" == id {
			return &luns[i], nil
		}
	}
	return nil, fmt.Errorf("%w: %s to %s", errNoLUN, id, san.host)
}

// errNoLUN: the device is no longer presented (permanent device loss for the host).
var errNoLUN = errors.New("no such LUN is presented")

func readHeader(lun int) (*vmfsHeader, error) {
	head, err := sanRead(lun, 0, vmfsHeadSz)
	if err != nil {
		return nil, err
	}
	if len(head) < 16 || string(head[:8]) != vmfsMagic {
		return nil, nil // no file system
	}
	n := binary.LittleEndian.Uint64(head[8:16])
	if n > vmfsHeadSz-16 {
		return nil, fmt.Errorf("LUN %d: VMFS header length %d out of range", lun, n)
	}
	var h vmfsHeader
	return &h, json.Unmarshal(head[16:16+n], &h)
}

func writeHeader(lun int, h *vmfsHeader) error {
	js, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if len(js) > vmfsHeadSz-16 {
		return fmt.Errorf("VMFS header too large (%d bytes)", len(js))
	}
	buf := make([]byte, 16+len(js))
	copy(buf, vmfsMagic)
	binary.LittleEndian.PutUint64(buf[8:16], uint64(len(js)))
	copy(buf[16:], js)
	return sanWrite(lun, 0, buf)
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return fmt.Sprintf("%s-%s-%s-%s", h[:8], h[8:16], h[16:20], h[20:32])
}

// pack writes the files of dir that changed since the last write back (data extents
// only, appended after what is on the LUN; everything again from 1 MiB when the LUN is
// full), then the header naming every file's extents.
func pack(lun *sanLUN, m *vmfsMount) error {
	var paths []string
	err := filepath.Walk(m.dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			paths = append(paths, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	for attempt := 0; attempt < 2; attempt++ {
		if m.packed == nil || attempt == 1 {
			m.packed, m.next = map[string]packedFile{}, vmfsHeadSz
		}
		h := &vmfsHeader{UUID: m.uuid, Label: m.label, Device: m.device}
		packed := map[string]packedFile{}
		full := false
		for _, p := range paths {
			rel, _ := filepath.Rel(m.dir, p)
			st, err := os.Stat(p)
			if err != nil {
				return err
			}
			old, ok := m.packed[rel]
			if !ok || old.size != st.Size() || old.mtime != st.ModTime().UnixNano() {
				vf, err := packFile(lun, p, rel, st.Size(), &m.next)
				if errors.Is(err, errLUNFull) {
					full = true
					break
				}
				if err != nil {
					return err
				}
				old = packedFile{size: st.Size(), mtime: st.ModTime().UnixNano(), file: vf}
			}
			packed[rel] = old
			h.Files = append(h.Files, old.file)
		}
		if full {
			continue
		}
		m.packed = packed
		return writeHeader(lun.Lun, h)
	}
	return fmt.Errorf("datastore %s does not fit its LUN (%d bytes)", m.label, lun.Size)
}

var errLUNFull = errors.New("the LUN is full")

// packFile writes one file's data extents from *next on.
func packFile(lun *sanLUN, p, rel string, size int64, next *int64) (vmfsFile, error) {
	vf := vmfsFile{Path: rel, Size: size}
	f, err := os.Open(p)
	if err != nil {
		return vf, err
	}
	defer f.Close()
	ext, err := dataExtents(f, size)
	if err != nil {
		return vf, err
	}
	for _, e := range ext {
		for off := e[0]; off < e[1]; off += 4 << 20 {
			n := e[1] - off
			if n > 4<<20 {
				n = 4 << 20
			}
			if *next+n > lun.Size {
				return vf, errLUNFull
			}
			buf := make([]byte, n)
			if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
				return vf, err
			}
			if err := sanWrite(lun.Lun, *next, buf); err != nil {
				return vf, err
			}
			vf.Extents = append(vf.Extents, [3]int64{off, n, *next})
			*next += (n + vmfsAlign - 1) / vmfsAlign * vmfsAlign
		}
	}
	return vf, nil
}

// unpack copies a volume's files from the LUN into dir (sparse).
func unpack(lun int, h *vmfsHeader, dir string) error {
	for _, vf := range h.Files {
		p := filepath.Join(dir, filepath.FromSlash(vf.Path))
		if !strings.HasPrefix(p, filepath.Clean(dir)+string(os.PathSeparator)) {
			return fmt.Errorf("VMFS file path %q escapes the volume", vf.Path)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0700); err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0600)
		if err != nil {
			return err
		}
		for _, e := range vf.Extents {
			data, err := sanRead(lun, e[2], e[1])
			if err == nil {
				_, err = f.WriteAt(data, e[0])
			}
			if err != nil {
				f.Close()
				return err
			}
		}
		err = f.Truncate(vf.Size)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// syncDatastore writes the VMs' .vmx files and the datastore back to its LUN.
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
