package main

// Raw device mappings (RDM): a VirtualDisk whose backing is a
// VirtualDiskRawDiskMappingVer1BackingInfo naming the array LUN it passes through
// (deviceName /vmfs/devices/disks/naa.<WWN>, lunUuid, compatibilityMode). The simulator
// keeps such a device as given, but its disk-layout bookkeeping asserts that every disk
// is a flat VMDK and panics on an RDM. So a reconfigure runs with the VM's existing RDM
// disks set aside (given back afterwards), and the panic the new RDMs cause at the very
// end (after the devices are configured) is that bookkeeping only: an RDM has no VMDK
// layout. Editing or removing an existing RDM disk is not supported here.

import (
	"fmt"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func isRDM(d types.BaseVirtualDevice) bool {
	disk, ok := d.(*types.VirtualDisk)
	if !ok {
		return false
	}
	_, rdm := disk.Backing.(*types.VirtualDiskRawDiskMappingVer1BackingInfo)
	return rdm
}

func runWithRDM(vm *simulator.VirtualMachine, t *simulator.Task, run runFunc) (res types.AnyType, fault types.BaseMethodFault) {
	var kept, rest []types.BaseVirtualDevice
	for _, d := range vm.Config.Hardware.Device {
		if isRDM(d) {
			kept = append(kept, d)
		} else {
			rest = append(rest, d)
		}
	}
	vm.Config.Hardware.Device = rest
	defer func() {
		vm.Config.Hardware.Device = append(vm.Config.Hardware.Device, kept...)
		if r := recover(); r != nil {
			if strings.Contains(fmt.Sprint(r), "RawDiskMapping") {
				res, fault = nil, nil
				return
			}
			panic(r)
		}
	}()
	return run(t)
}
