package main

// A VM's configuration as a .vmx text (written before a datastore goes back to its LUN)
// and read back by RegisterVM_Task, which stock vcsim does not do (it registers a VM
// with no disks). Only what a recovery site needs is kept: name, guest, CPUs, memory,
// annotation, BIOS uuid, SCSI disks (slot and file) and NIC networks and addresses.
// A disk's size comes from its descriptor ("RW <sectors> VMFS ..."), as on ESX.

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

func vmxText(vm *simulator.VirtualMachine) string {
	var b strings.Builder
	put := func(k, v string) { fmt.Fprintf(&b, "%s = %q\n", k, v) }
	put(".encoding", "UTF-8")
	put("displayName", vm.Name)
	put("guestOS", vm.Config.GuestId)
	put("numvcpus", strconv.Itoa(int(vm.Config.Hardware.NumCPU)))
	put("memsize", strconv.Itoa(int(vm.Config.Hardware.MemoryMB)))
	put("uuid.bios", vm.Config.Uuid)
	if vm.Config.Annotation != "" {
		put("annotation", vm.Config.Annotation)
	}
	var vmxDir object.DatastorePath
	vmxDir.FromString(vm.Config.Files.VmPathName)
	buses := map[int32]int32{}
	nic := 0
	for _, d := range vm.Config.Hardware.Device {
		if c, ok := d.(types.BaseVirtualSCSIController); ok {
			buses[c.GetVirtualSCSIController().Key] = c.GetVirtualSCSIController().BusNumber
		}
	}
	for _, d := range vm.Config.Hardware.Device {
		if disk, back := flatBacking(d); disk != nil {
			bus, ok := buses[disk.ControllerKey]
			if !ok || disk.UnitNumber == nil {
				continue
			}
			var p object.DatastorePath
			p.FromString(back.FileName)
			name := back.FileName
			if p.Datastore == vmxDir.Datastore && path.Dir(p.Path) == path.Dir(vmxDir.Path) {
				name = path.Base(p.Path)
			}
			slot := fmt.Sprintf("scsi%d:%d", bus, *disk.UnitNumber)
			put(fmt.Sprintf("scsi%d.present", bus), "TRUE")
			put(slot+".present", "TRUE")
			put(slot+".fileName", name)
		}
		if card, ok := d.(types.BaseVirtualEthernetCard); ok {
			c := card.GetVirtualEthernetCard()
			if nb, ok := c.Backing.(*types.VirtualEthernetCardNetworkBackingInfo); ok {
				put(fmt.Sprintf("ethernet%d.present", nic), "TRUE")
				put(fmt.Sprintf("ethernet%d.networkName", nic), nb.DeviceName)
				put(fmt.Sprintf("ethernet%d.address", nic), c.MacAddress)
				nic++
			}
		}
	}
	return b.String()
}

func parseVmx(file string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if s, err := strconv.Unquote(strings.TrimSpace(v)); err == nil {
			out[strings.TrimSpace(k)] = s
		}
	}
	return out, sc.Err()
}

// descriptorBytes reads a disk's size from its descriptor's extent line.
func descriptorBytes(local string) int64 {
	data, err := os.ReadFile(local)
	if err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "RW" {
				if n, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					return n * 512
				}
			}
		}
	}
	if st, err := os.Stat(flatName(local)); err == nil {
		return st.Size()
	}
	return 0
}

// networkByName: the network called name, or (as a NIC left on a network this site
// lacks) a reference to none, which vcsim's device edit needs to be non-nil.
func networkByName(name string) *types.ManagedObjectReference {
	for _, obj := range simulator.Map.All("Network") {
		if n, ok := obj.(*mo.Network); ok && n.Name == name {
			ref := n.Reference()
			return &ref
		}
	}
	return &types.ManagedObjectReference{Type: "Network", Value: "missing-" + name}
}

// applyVmx gives a VM just registered the devices its .vmx describes.
func applyVmx(vm *simulator.VirtualMachine) types.BaseMethodFault {
	local, err := localPath(vm.Config.Files.VmPathName)
	if err != nil {
		return fileFault(vm.Config.Files.VmPathName, err)
	}
	kv, err := parseVmx(local)
	if err != nil {
		return fileFault(local, err)
	}
	if len(kv) == 0 {
		return nil // an empty .vmx (stock vcsim's): nothing to apply
	}
	if v := kv["guestOS"]; v != "" {
		vm.Config.GuestId, vm.Summary.Config.GuestId = v, v
	}
	if n, err := strconv.Atoi(kv["numvcpus"]); err == nil {
		vm.Config.Hardware.NumCPU, vm.Summary.Config.NumCpu = int32(n), int32(n)
	}
	if n, err := strconv.Atoi(kv["memsize"]); err == nil {
		vm.Config.Hardware.MemoryMB, vm.Summary.Config.MemorySizeMB = int32(n), int32(n)
	}
	vm.Config.Annotation = kv["annotation"]
	var vmxPath object.DatastorePath
	vmxPath.FromString(vm.Config.Files.VmPathName)
	var slots []string
	for k := range kv {
		if strings.HasPrefix(k, "scsi") && strings.HasSuffix(k, ".fileName") {
			slots = append(slots, strings.TrimSuffix(k, ".fileName"))
		}
	}
	sort.Strings(slots)
	devs := vm.Config.Hardware.Device
	ctrls := map[int32]int32{} // bus -> key
	for i, slot := range slots {
		var bus, unit int32
		if _, err := fmt.Sscanf(slot, "scsi%d:%d", &bus, &unit); err != nil {
			continue
		}
		key, ok := ctrls[bus]
		if !ok {
			key = 1000 + bus
			ctrls[bus] = key
			c := &types.VirtualLsiLogicController{}
			c.Key, c.BusNumber, c.SharedBus = key, bus, types.VirtualSCSISharingNoSharing
			c.DeviceInfo = &types.Description{Label: fmt.Sprintf("SCSI controller %d", bus), Summary: "LSI Logic"}
			devs = append(devs, c)
		}
		file := kv[slot+".fileName"]
		if !strings.HasPrefix(file, "[") {
			file = fmt.Sprintf("[%s] %s", vmxPath.Datastore, path.Join(path.Dir(vmxPath.Path), file))
		}
		dl, err := localPath(file)
		if err != nil {
			return fileFault(file, err)
		}
		size := descriptorBytes(dl)
		u := unit
		disk := &types.VirtualDisk{CapacityInKB: size / 1024, CapacityInBytes: size}
		disk.Key, disk.ControllerKey, disk.UnitNumber = int32(2000+i), key, &u
		disk.DeviceInfo = &types.Description{Label: fmt.Sprintf("Hard disk %d", i+1), Summary: fmt.Sprintf("%d KB", size/1024)}
		disk.Backing = &types.VirtualDiskFlatVer2BackingInfo{
			VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: file},
			DiskMode:                     string(types.VirtualDiskModePersistent), ThinProvisioned: types.NewBool(true)}
		devs = append(devs, disk)
	}
	var cards []*types.VirtualEthernetCard
	for _, d := range devs {
		if card, ok := d.(types.BaseVirtualEthernetCard); ok {
			cards = append(cards, card.GetVirtualEthernetCard())
		}
	}
	for n := 0; ; n++ {
		name, ok := kv[fmt.Sprintf("ethernet%d.networkName", n)]
		if !ok {
			break
		}
		if n >= len(cards) {
			e := &types.VirtualE1000{}
			e.Key, e.ControllerKey = int32(4000+n), 100
			e.DeviceInfo = &types.Description{Label: fmt.Sprintf("Network adapter %d", n+1), Summary: name}
			devs = append(devs, e)
			cards = append(cards, &e.VirtualEthernetCard)
		}
		c := cards[n]
		c.Backing = &types.VirtualEthernetCardNetworkBackingInfo{
			VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: name},
			Network:                        networkByName(name)}
		if mac := kv[fmt.Sprintf("ethernet%d.address", n)]; mac != "" {
			c.MacAddress, c.AddressType = mac, string(types.VirtualEthernetCardMacTypeAssigned)
		}
	}
	vm.Config.Hardware.Device = devs
	return ensureDiskFiles(vm)
}
