package main

// Changed Block Tracking (CBT), as vCenter offers it to backup software.
//
// Tracking is per disk and per "epoch": turning config.changeTrackingEnabled on (via
// ReconfigVM, CreateVM or a clone) gives each disk a fresh epoch, a UUID-ish string
// like vCenter's ("52 1f ... 9a-0c ... 44"). A changeId is "<epoch>/<seq>" and names
// a recorded disk state: seq 0 is the disk when tracking was turned on, and each
// CreateSnapshot while tracking is on records the frozen disk under the next seq. The
// snapshot's config shows that changeId on its disk backing, and so does the VM's
// current config (until the next snapshot). Recording a state writes one 16-byte hash
// (the first 16 bytes of its SHA-256; all zero for a hole or an all-zero block) per 64 KiB block of the
// disk to a file in the CBT directory (-cbt-dir); files are never changed afterwards.
//
// QueryChangedDiskAreas(snapshot, deviceKey, startOffset, changeId) compares the
// hashes of the snapshot's frozen disk with those recorded under changeId and answers
// the changed blocks, adjacent ones merged; changeId "*" answers the allocated
// (non-hole) areas, block aligned. Answers are paged like vCenter's: at most
// pageLimit areas per answer, DiskChangeInfo.length says how far the answer covers,
// the client asks again from startOffset+length until it reaches the disk's end.
//
// Faults, as vCenter answers them:
//   - unknown changeId (never issued, from another disk, from before tracking was
//     turned off and on again, or recorded at another disk capacity): InvalidArgument,
//     invalidProperty "changeId", "A specified parameter was not correct: changeId";
//   - tracking off for the VM, or the snapshot was taken while it was off: FileFault
//     on the disk's file, "Error caused by file [DS] vm/disk.vmdk";
//   - bad deviceKey / startOffset / snapshot of another VM: InvalidArgument naming it.
//
// Without a snapshot the VM's current disk is compared as it is at the call (vCenter
// allows this only for a powered-off VM; not enforced here).
//
// Dispatch: vcsim calls a method by reflection on the object registered for _this,
// and the VM object cannot be replaced (vcsim asserts *VirtualMachine). So the front
// handler rewrites _this of a QueryChangedDiskAreas request from VirtualMachine:vm-N to
// DpflowCbt:vm-N, an object registered here whose method does the work. vcsim still
// checks the session, decodes the request and encodes the answer or the fault.

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
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
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	cbtBlock    = 64 << 10
	cbtHashSize = 16
	cbtType     = "DpflowCbt"
)

type cbtRecord struct {
	file     string
	capacity int64
}

type diskTrack struct {
	epoch   string
	seq     int
	records map[string]*cbtRecord // changeId -> recorded state
}

func (d *diskTrack) current() string { return fmt.Sprintf("%s/%d", d.epoch, d.seq) }

var cbt = struct {
	sync.Mutex
	dir       string
	pageLimit int
	dropArea  int // index of the changed area to omit from answers; -1: none
	dropped   int // how many answers had an area omitted
	queries   int
	vms       map[types.ManagedObjectReference]map[int32]*diskTrack
}{pageLimit: 64, dropArea: -1, vms: map[types.ManagedObjectReference]map[int32]*diskTrack{}}

func newEpoch() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[0] = 0x52
	var s strings.Builder
	for i, c := range b {
		switch {
		case i == 8:
			s.WriteByte('-')
		case i > 0:
			s.WriteByte(' ')
		}
		fmt.Fprintf(&s, "%02x", c)
	}
	return s.String()
}

// hashDisk returns one cbtHashSize hash per block of the first capacity bytes of the
// file; blocks in holes or all zero get the zero hash, without being read for holes.
func hashDisk(file string, capacity int64) ([]byte, error) {
	nblocks := (capacity + cbtBlock - 1) / cbtBlock
	out := make([]byte, nblocks*cbtHashSize)
	if err := materialize(file); err != nil { // a sparse delta: whole first
		return nil, err
	}
	f, extents, err := openExtents(file, capacity)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, cbtBlock)
	zero := make([]byte, cbtBlock)
	next := int64(0) // first block not hashed yet
	for _, e := range extents {
		first, last := e[0]/cbtBlock, (e[1]-1)/cbtBlock
		if first < next {
			first = next
		}
		for blk := first; blk <= last; blk++ {
			n, err := f.ReadAt(buf, blk*cbtBlock)
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			for i := n; i < cbtBlock; i++ {
				buf[i] = 0
			}
			if !bytes.Equal(buf, zero) {
				h := out[blk*cbtHashSize:]
				// SHA-256 (not a per-process seeded hash): recorded hashes outlive
				// the process when the inventory is persistent (-state-dir)
				sum := sha256.Sum256(buf)
				copy(h, sum[:cbtHashSize])
				h[0] |= 1 // never the zero hash of an empty block
			}
		}
		if last+1 > next {
			next = last + 1
		}
	}
	return out, nil
}

// dataExtents lists the [start, end) data (non-hole) extents of f below limit.
// openExtents opens a file for reading with its data extents up to limit.
func openExtents(path string, limit int64) (*os.File, [][2]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	ext, err := dataExtents(f, limit)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, ext, nil
}

func dataExtents(f *os.File, limit int64) ([][2]int64, error) {
	const seekData, seekHole = 3, 4
	var out [][2]int64
	for off := int64(0); off < limit; {
		data, err := f.Seek(off, seekData)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) {
				break
			}
			return nil, err
		}
		if data >= limit {
			break
		}
		hole, err := f.Seek(data, seekHole)
		if err != nil {
			return nil, err
		}
		if hole > limit {
			hole = limit
		}
		out = append(out, [2]int64{data, hole})
		off = hole
	}
	return out, nil
}

// record hashes the disk state in dsPath (a datastore path of a descriptor) and
// stores it under changeId. Called with cbt locked.
func (d *diskTrack) record(vm types.ManagedObjectReference, key int32, changeID, dsPath string, capacity int64) error {
	local, err := localPath(dsPath)
	if err != nil {
		return err
	}
	hashes, err := hashDisk(flatName(local), capacity)
	if err != nil {
		return err
	}
	name := strings.NewReplacer(" ", "", "-", "", "/", "-").Replace(changeID)
	file := filepath.Join(cbt.dir, fmt.Sprintf("%s-%d-%s.ctk", vm.Value, key, name))
	if err := os.WriteFile(file, hashes, 0600); err != nil {
		return err
	}
	d.records[changeID] = &cbtRecord{file: file, capacity: capacity}
	return nil
}

func (d *diskTrack) forget() {
	for _, r := range d.records {
		_ = os.Remove(r.file)
	}
	d.records = map[string]*cbtRecord{}
}

// cbtSync brings the tracking state of vm in line with its config (tracking on or
// off, disks added or removed) and shows each disk's changeId on the VM's current
// device backings. Called with the VM locked (after reconfigure, create, clone,
// revert, consolidation).
func cbtSync(vm *simulator.VirtualMachine) types.BaseMethodFault {
	if vm.Config == nil {
		return nil
	}
	cbt.Lock()
	defer cbt.Unlock()
	enabled := vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
	disks := cbt.vms[vm.Self]
	if !enabled {
		for _, d := range disks {
			d.forget()
		}
		delete(cbt.vms, vm.Self)
		disks = nil
	} else if disks == nil {
		disks = map[int32]*diskTrack{}
		cbt.vms[vm.Self] = disks
	}
	present := map[int32]bool{}
	for _, dev := range vm.Config.Hardware.Device {
		disk, b := flatBacking(dev)
		if disk == nil {
			continue
		}
		present[disk.Key] = true
		if !enabled {
			b.ChangeId = ""
			continue
		}
		d := disks[disk.Key]
		if d == nil {
			d = &diskTrack{epoch: newEpoch(), records: map[string]*cbtRecord{}}
			if err := d.record(vm.Self, disk.Key, d.current(), b.FileName, capacity(disk)); err != nil {
				return fileFault(b.FileName, err)
			}
			disks[disk.Key] = d
		}
		b.ChangeId = d.current()
	}
	for key, d := range disks {
		if !present[key] {
			d.forget()
			delete(disks, key)
		}
	}
	simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: vm.Config.Hardware.Device}})
	return nil
}

// cbtAfterSnapshot records the state each disk froze in the new snapshot under a new
// changeId, shown on the snapshot's and the VM's disk backings. VM locked.
func cbtAfterSnapshot(vm *simulator.VirtualMachine, snap *simulator.VirtualMachineSnapshot) types.BaseMethodFault {
	cbt.Lock()
	disks := cbt.vms[vm.Self]
	ids := map[int32]string{}
	for _, dev := range snap.Config.Hardware.Device {
		disk, b := flatBacking(dev)
		if disk == nil || disks[disk.Key] == nil {
			continue
		}
		d := disks[disk.Key]
		d.seq++
		id := d.current()
		if err := d.record(vm.Self, disk.Key, id, b.FileName, capacity(disk)); err != nil {
			d.seq--
			cbt.Unlock()
			return fileFault(b.FileName, err)
		}
		b.ChangeId = id
		ids[disk.Key] = id
	}
	cbt.Unlock()
	if len(ids) == 0 {
		return nil
	}
	for _, dev := range vm.Config.Hardware.Device {
		if disk, b := flatBacking(dev); disk != nil && ids[disk.Key] != "" {
			b.ChangeId = ids[disk.Key]
		}
	}
	simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: vm.Config.Hardware.Device}})
	return nil
}

func cbtForgetVM(vm types.ManagedObjectReference) {
	cbt.Lock()
	defer cbt.Unlock()
	for _, d := range cbt.vms[vm] {
		d.forget()
	}
	delete(cbt.vms, vm)
}

// cbtDispatch is registered as DpflowCbt:<vm moref value> and receives the VM's
// QueryChangedDiskAreas calls (the front handler rewrites their _this).
type cbtDispatch struct {
	self types.ManagedObjectReference
}

func (c *cbtDispatch) Reference() types.ManagedObjectReference { return c.self }

// cbtRoute makes sure a dispatch object exists for the VM and says whether the call
// can be routed to it (false: no such VM; vcsim answers the call itself).
func cbtRoute(vm types.ManagedObjectReference) bool {
	if _, ok := simulator.Map.Get(vm).(*simulator.VirtualMachine); !ok {
		return false
	}
	ref := types.ManagedObjectReference{Type: cbtType, Value: vm.Value}
	if simulator.Map.Get(ref) == nil {
		simulator.Map.Put(&cbtDispatch{self: ref})
	}
	return true
}

func cbtFault(msg string, f types.BaseMethodFault) soap.HasFault {
	return &methods.QueryChangedDiskAreasBody{Fault_: simulator.Fault(msg, f)}
}

func invalidArgument(prop string) soap.HasFault {
	return cbtFault("A specified parameter was not correct: "+prop, &types.InvalidArgument{InvalidProperty: prop})
}

// QueryChangedDiskAreas is vim.VirtualMachine.QueryChangedDiskAreas.
func (c *cbtDispatch) QueryChangedDiskAreas(ctx *simulator.Context, req *types.QueryChangedDiskAreas) soap.HasFault {
	vmRef := types.ManagedObjectReference{Type: "VirtualMachine", Value: c.self.Value}
	if f := faults.takeArmed(vmRef); f != nil { // a "task" kind rule: answer its fault
		msg := ""
		for _, m := range f.GetMethodFault().FaultMessage {
			msg = m.Message
		}
		return cbtFault(msg, f)
	}
	vm, ok := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	if !ok {
		return cbtFault("managed object not found", &types.ManagedObjectNotFound{Obj: vmRef})
	}

	var (
		fault    soap.HasFault
		dsPath   string
		size     int64
		targetID string
		enabled  bool
	)
	simulator.Map.WithLock(vm, func() {
		devices := vm.Config.Hardware.Device
		if req.Snapshot != nil {
			snap, ok := simulator.Map.Get(*req.Snapshot).(*simulator.VirtualMachineSnapshot)
			if !ok || snap.Vm != vm.Self {
				fault = invalidArgument("snapshot")
				return
			}
			devices = snap.Config.Hardware.Device
		}
		for _, dev := range devices {
			if disk, b := flatBacking(dev); disk != nil && disk.Key == req.DeviceKey {
				dsPath, size, targetID = b.FileName, capacity(disk), b.ChangeId
			}
		}
		enabled = vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
	})
	if fault != nil {
		return fault
	}
	if dsPath == "" {
		return invalidArgument("deviceKey")
	}
	if req.StartOffset < 0 || req.StartOffset >= size {
		return invalidArgument("startOffset")
	}
	fileFaultBody := cbtFault("Error caused by file "+dsPath, &types.FileFault{File: dsPath})

	cbt.Lock()
	disk := cbt.vms[vm.Self][req.DeviceKey]
	var base, target *cbtRecord
	if disk != nil {
		base = disk.records[req.ChangeId]
		if req.Snapshot != nil { // no snapshot: the live disk, hashed below
			target = disk.records[targetID]
		}
	}
	limit, drop := cbt.pageLimit, cbt.dropArea
	cbt.queries++
	cbt.Unlock()
	if !enabled || disk == nil || targetID == "" {
		return fileFaultBody
	}
	local, err := localPath(dsPath)
	if err != nil {
		return fileFaultBody
	}

	var areas [][2]int64
	if req.ChangeId == "*" {
		f, err := os.Open(flatName(local))
		if err != nil {
			return fileFaultBody
		}
		extents, err := dataExtents(f, size)
		_ = f.Close()
		if err != nil {
			return fileFaultBody
		}
		for _, e := range extents {
			start := e[0] / cbtBlock * cbtBlock
			end := (e[1] + cbtBlock - 1) / cbtBlock * cbtBlock
			areas = appendArea(areas, start, end)
		}
	} else {
		if base == nil || base.capacity != size {
			return invalidArgument("changeId")
		}
		old, err := os.ReadFile(base.file)
		if err != nil {
			return fileFaultBody
		}
		var cur []byte
		if target != nil && target.capacity == size {
			cur, err = os.ReadFile(target.file)
		} else { // the target state was not recorded in this epoch: hash it now
			cur, err = hashDisk(flatName(local), size)
		}
		if err != nil || len(cur) != len(old) {
			return fileFaultBody
		}
		for blk := 0; blk*cbtHashSize < len(cur); blk++ {
			i := blk * cbtHashSize
			if !bytes.Equal(cur[i:i+cbtHashSize], old[i:i+cbtHashSize]) {
				areas = appendArea(areas, int64(blk)*cbtBlock, int64(blk+1)*cbtBlock)
			}
		}
	}
	for i := range areas {
		if areas[i][1] > size {
			areas[i][1] = size
		}
	}
	if drop >= 0 && drop < len(areas) { // deliberate corruption for tests (/_cbt)
		areas = append(areas[:drop:drop], areas[drop+1:]...)
		cbt.Lock()
		cbt.dropped++
		cbt.Unlock()
	}

	info := types.DiskChangeInfo{StartOffset: req.StartOffset, Length: size - req.StartOffset}
	i := sort.Search(len(areas), func(i int) bool { return areas[i][1] > req.StartOffset })
	for ; i < len(areas); i++ {
		if len(info.ChangedArea) == limit {
			last := info.ChangedArea[len(info.ChangedArea)-1]
			info.Length = last.Start + last.Length - req.StartOffset
			break
		}
		start := areas[i][0]
		if start < req.StartOffset {
			start = req.StartOffset
		}
		info.ChangedArea = append(info.ChangedArea, types.DiskChangeExtent{Start: start, Length: areas[i][1] - start})
	}
	return &methods.QueryChangedDiskAreasBody{Res: &types.QueryChangedDiskAreasResponse{Returnval: info}}
}

// appendArea adds [start, end) to sorted areas, merging it with the last one when
// they touch or overlap.
func appendArea(areas [][2]int64, start, end int64) [][2]int64 {
	if n := len(areas); n > 0 && start <= areas[n-1][1] {
		if end > areas[n-1][1] {
			areas[n-1][1] = end
		}
		return areas
	}
	return append(areas, [2]int64{start, end})
}

// serveCBT: GET the settings and counters; POST {"page_limit": N} and/or
// {"drop_area": N|null} (omit the Nth changed area, counted from the disk's start,
// from every answer; null stops it).
func serveCBT(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		var req map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeJSON(w, 400, map[string]string{"error": err.Error()})
			return
		}
		for k := range req {
			if k != "page_limit" && k != "drop_area" {
				writeJSON(w, 400, map[string]string{"error": "unknown key " + k + " (page_limit, drop_area)"})
				return
			}
		}
		limit, drop := -1, -2
		if raw, ok := req["page_limit"]; ok {
			if err := json.Unmarshal(raw, &limit); err != nil || limit < 1 {
				writeJSON(w, 400, map[string]string{"error": "page_limit must be an integer >= 1"})
				return
			}
		}
		if raw, ok := req["drop_area"]; ok {
			var n *int
			if err := json.Unmarshal(raw, &n); err != nil || (n != nil && *n < 0) {
				writeJSON(w, 400, map[string]string{"error": "drop_area must be an integer >= 0 or null"})
				return
			}
			drop = -1
			if n != nil {
				drop = *n
			}
		}
		cbt.Lock()
		if limit > 0 {
			cbt.pageLimit = limit
		}
		if drop > -2 {
			cbt.dropArea = drop
		}
		cbt.Unlock()
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	cbt.Lock()
	out := map[string]interface{}{
		"page_limit": cbt.pageLimit, "drop_area": nil, "dropped": cbt.dropped,
		"queries": cbt.queries, "block_size": cbtBlock,
	}
	if cbt.dropArea >= 0 {
		out["drop_area"] = cbt.dropArea
	}
	tracked := map[string]map[string]string{}
	for vm, disks := range cbt.vms {
		m := map[string]string{}
		for key, d := range disks {
			m[fmt.Sprint(key)] = d.current()
		}
		tracked[vm.Value] = m
	}
	out["tracked"] = tracked
	cbt.Unlock()
	writeJSON(w, 200, out)
}
