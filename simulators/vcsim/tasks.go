package main

import (
	"log"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// taskHook sees every Task when it is registered (before it runs: tasks run
// synchronously inside the SOAP call) and wraps its Execute. That one seam gives us
//   - injected task faults (armed by the front handler for the call's _this),
//   - the TaskInfo.entity fix (pyVmomi's WaitForTask raises TypeError when the
//     entity is a snapshot or a VirtualDiskManager, which are not ManagedEntities),
//   - disk files and delta disks around the built-in VM and snapshot methods,
//
// without replacing the VM type in the registry (the simulator asserts
// *simulator.VirtualMachine in many places).
type taskHook struct{}

var hookRef = types.ManagedObjectReference{Type: "DpflowTaskHook", Value: "dpflow-task-hook"}

func (taskHook) Reference() types.ManagedObjectReference { return hookRef }

// UpdateObject gives an injected task fault its message as localizedMessage (what
// pyVmomi shows as the exception's msg); vcsim's Task.Run puts the Go type name there.
func (taskHook) UpdateObject(obj mo.Reference, changes []types.PropertyChange) {
	t, ok := obj.(*mo.Task)
	if !ok {
		return
	}
	heldEnd(t)
	if t.Info.Error == nil || t.Info.Error.Fault == nil {
		return
	}
	for _, m := range t.Info.Error.Fault.GetMethodFault().FaultMessage {
		if m.Key == injectedKey {
			t.Info.Error.LocalizedMessage = m.Message
		}
	}
}

func (taskHook) RemoveObject(types.ManagedObjectReference) {}

func (taskHook) PutObject(obj mo.Reference) {
	task, ok := obj.(*simulator.Task)
	if !ok || task.Info.Entity == nil {
		return
	}
	entity := *task.Info.Entity
	id := task.Info.DescriptionId
	holdTask(entity, task.Self)
	fixTaskEntity(task)

	run := task.Execute
	task.Execute = func(t *simulator.Task) (types.AnyType, types.BaseMethodFault) {
		if fault := faults.takeArmed(entity); fault != nil {
			return nil, fault
		}
		return wrapTask(id, entity, t, run)
	}
}

func fixTaskEntity(task *simulator.Task) {
	obj := simulator.Map.Get(*task.Info.Entity)
	if _, ok := obj.(mo.Entity); ok || obj == nil {
		return
	}
	if snap, ok := obj.(*simulator.VirtualMachineSnapshot); ok {
		vm := snap.Vm
		task.Info.Entity = &vm
		if v, ok := simulator.Map.Get(vm).(*simulator.VirtualMachine); ok {
			task.Info.EntityName = v.Name
		}
		return
	}
	task.Info.Entity = nil
	task.Info.EntityName = ""
}

type runFunc func(*simulator.Task) (types.AnyType, types.BaseMethodFault)

// wrapTask adds dpflow's disk behaviour around the built-in task bodies. The lock
// comments say what the simulator's call() already holds: its locks are plain
// mutexes, so taking one twice deadlocks.
func wrapTask(id string, entity types.ManagedObjectReference, t *simulator.Task, run runFunc) (types.AnyType, types.BaseMethodFault) {
	switch id {
	case "Folder.createVm": // folder locked
		res, fault := run(t)
		if fault == nil {
			if vm, ok := simulator.Map.Get(res.(types.ManagedObjectReference)).(*simulator.VirtualMachine); ok {
				fault = ensureDiskFiles(vm)
				if fault == nil {
					simulator.Map.WithLock(vm, func() { fault = cbtSync(vm) })
				}
			}
		}
		return res, fault
	case "VirtualMachine.reconfigVm": // vm locked
		vm := simulator.Map.Get(entity).(*simulator.VirtualMachine)
		res, fault := runWithRDM(vm, t, run)
		if fault == nil {
			fault = ensureDiskFiles(vm)
			if fault == nil {
				fault = cbtSync(vm)
			}
		}
		return res, fault
	case "VirtualMachine.createSnapshot": // vm locked
		res, fault := run(t)
		if fault == nil {
			fault = afterCreateSnapshot(entity, res.(types.ManagedObjectReference))
		}
		if fault == nil {
			vm := simulator.Map.Get(entity).(*simulator.VirtualMachine)
			snap := simulator.Map.Get(res.(types.ManagedObjectReference)).(*simulator.VirtualMachineSnapshot)
			fault = cbtAfterSnapshot(vm, snap)
		}
		return res, fault
	case "VirtualMachineSnapshot.removeSnapshot": // snapshot locked, built-in locks the vm
		return removeSnapshot(entity, t, run)
	case "VirtualMachine.RemoveAllSnapshots": // vm locked
		return removeAllSnapshots(entity, t, run)
	case "VirtualMachineSnapshot.revertToSnapshot": // snapshot locked
		res, fault := run(t)
		if fault == nil {
			snap := simulator.Map.Get(entity).(*simulator.VirtualMachineSnapshot)
			vm := simulator.Map.Get(snap.Vm).(*simulator.VirtualMachine)
			simulator.Map.WithLock(vm, func() {
				if fault = revertTo(vm, entity); fault == nil {
					fault = cbtSync(vm)
				}
			})
		}
		return res, fault
	case "VirtualMachine.revertSnapshot": // vm locked (RevertToCurrentSnapshot)
		res, fault := run(t)
		if fault == nil {
			vm := simulator.Map.Get(entity).(*simulator.VirtualMachine)
			if vm.Snapshot != nil && vm.Snapshot.CurrentSnapshot != nil {
				fault = revertTo(vm, *vm.Snapshot.CurrentSnapshot)
			}
			if fault == nil {
				fault = cbtSync(vm)
			}
		}
		return res, fault
	case "VirtualMachine.relocateVm": // vm locked
		res, fault := run(t)
		if fault == nil {
			fault = relocateDisks(simulator.Map.Get(entity).(*simulator.VirtualMachine))
		}
		return res, fault
	case "VirtualMachine.cloneVm": // vm locked
		return cloneVM(entity, t, run)
	case "VirtualMachine.powerOn", "VirtualMachine.powerOff", "VirtualMachine.reset": // vm locked
		res, fault := run(t)
		if fault == nil {
			afterPower(entity)
			if id == "VirtualMachine.powerOff" { // the host writes the VM's datastore back
				fault = syncVM(simulator.Map.Get(entity).(*simulator.VirtualMachine))
			}
		}
		return res, fault
	case "Folder.registerVm": // folder locked
		res, fault := run(t)
		if fault == nil {
			if vm, ok := simulator.Map.Get(res.(types.ManagedObjectReference)).(*simulator.VirtualMachine); ok {
				if fault = applyVmx(vm); fault == nil {
					simulator.Map.WithLock(vm, func() { fault = cbtSync(vm) })
				}
			}
		}
		return res, fault
	case "Datastore.destroy":
		name := ""
		if ds, ok := simulator.Map.Get(entity).(*simulator.Datastore); ok {
			name = ds.Name
		}
		res, fault := run(t)
		if fault == nil {
			forgetDatastore(name)
		}
		return res, fault
	case "VirtualMachine.destroy":
		res, fault := run(t)
		if fault == nil {
			forgetVM(entity)
			cbtForgetVM(entity)
		}
		return res, fault
	}
	return run(t)
}

func installTaskHook() {
	simulator.Map.AddHandler(taskHook{})
}

// faultByName builds a vim25 fault (e.g. "ApplicationQuiesceFault") by type name.
func faultByName(name, message string) (types.BaseMethodFault, bool) {
	name = strings.TrimPrefix(name, "vim.fault.")
	typ, ok := types.TypeFunc()(name)
	if !ok {
		return nil, false
	}
	v := reflectNew(typ)
	f, ok := v.(types.BaseMethodFault)
	if !ok {
		return nil, false
	}
	if message != "" {
		f.GetMethodFault().FaultMessage = []types.LocalizableMessage{{Key: injectedKey, Message: message}}
	}
	return f, true
}

const injectedKey = "dpflow.injected"

func logf(format string, args ...interface{}) { log.Printf(format, args...) }
