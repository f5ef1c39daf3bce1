package main

// Guest heartbeat. Stock vcsim leaves every VM's VMware Tools "not running" and its
// guest heartbeat gray, so nothing can wait for a guest to come up. Here the simulated
// tools start with the VM when its first disk holds a file system the guest operations
// can work on (guest.go's findExtFS): the guest "boots" from what is on its disk. A VM
// whose first disk has none (blank, or damaged) powers on but never reports a
// heartbeat, like a guest that does not boot. Power off stops the tools. Nothing else of
// a guest is simulated: no boot time, no IP address, no OS.

import (
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// guestBoots says whether the VM's first disk carries an ext file system.
func guestBoots(vm *simulator.VirtualMachine) bool {
	for _, d := range vm.Config.Hardware.Device {
		if disk, b := flatBacking(d); disk != nil {
			local, err := localPath(b.FileName)
			if err != nil {
				return false
			}
			flat := flatName(local)
			if err := materialize(flat); err != nil {
				return false
			}
			_, err = findExtFS(flat)
			return err == nil
		}
	}
	return false
}

// afterPower sets the tools and heartbeat state after a power task (the VM is locked).
func afterPower(entity types.ManagedObjectReference) {
	vm, ok := simulator.Map.Get(entity).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	tools := types.VirtualMachineToolsStatusToolsNotRunning
	running := string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning)
	beat := types.ManagedEntityStatusGray
	if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn && guestBoots(vm) {
		tools = types.VirtualMachineToolsStatusToolsOk
		running = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
		beat = types.ManagedEntityStatusGreen
	}
	if vm.Guest == nil {
		vm.Guest = &types.GuestInfo{}
	}
	vm.Guest.ToolsStatus = tools
	vm.Guest.ToolsRunningStatus = running
	vm.GuestHeartbeatStatus = beat
	vm.Summary.QuickStats.GuestHeartbeatStatus = beat
	if vm.Summary.Guest != nil {
		vm.Summary.Guest.ToolsStatus = tools
		vm.Summary.Guest.ToolsRunningStatus = running
	}
}
