package main

import (
	"log"
	"reflect"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// propertyCollector shadows the built-in Fetch: pyVmomi >= 8 reads every property
// through Fetch, and stock 0.24.2 panics (the client sees RemoteDisconnected) when
// the property is unset, e.g. vm.snapshot of a VM without snapshots. Real vCenter
// answers an empty FetchResponse (pyVmomi: None); so do we.
//
// Embedded by value: the simulator makes per-session copies with reflect.New of
// the registered type, so a nil embedded pointer would crash them.
type propertyCollector struct {
	simulator.PropertyCollector
}

// FetchResponse and FetchBody mirror the simulator's internal (unimportable) types;
// the XML element name comes from the type name.
type FetchResponse struct {
	Returnval types.AnyType `xml:"returnval,omitempty,typeattr"`
}

type FetchBody struct {
	Res    *FetchResponse `xml:"FetchResponse,omitempty"`
	Fault_ *soap.Fault    `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault,omitempty"`
}

func (b *FetchBody) Fault() *soap.Fault { return b.Fault_ }

func (pc *propertyCollector) Fetch(ctx *simulator.Context, req interface{}) (res soap.HasFault) {
	rv := reflect.ValueOf(req).Elem()
	this, _ := rv.FieldByName("This").Interface().(types.ManagedObjectReference)
	prop, _ := rv.FieldByName("Prop").Interface().(string)

	if this.Type != "ServiceInstance" && simulator.Map.Get(this) != nil {
		r := pc.RetrievePropertiesEx(ctx, &types.RetrievePropertiesEx{
			SpecSet: []types.PropertyFilterSpec{{
				PropSet:   []types.PropertySpec{{Type: this.Type, PathSet: []string{prop}}},
				ObjectSet: []types.ObjectSpec{{Obj: this}},
			}},
		})
		if r.Fault() != nil {
			return r
		}
		ret := r.(*methods.RetrievePropertiesExBody).Res.Returnval
		if ret == nil || len(ret.Objects) == 0 ||
			(len(ret.Objects[0].PropSet) == 0 && len(ret.Objects[0].MissingSet) == 0) {
			return &FetchBody{Res: &FetchResponse{}}
		}
	}

	defer func() {
		if p := recover(); p != nil {
			log.Printf("Fetch %s.%s panicked (%v): answering unset", this, prop, p)
			res = &FetchBody{Res: &FetchResponse{}}
		}
	}()
	m := reflect.ValueOf(&pc.PropertyCollector).MethodByName("Fetch")
	out := m.Call([]reflect.Value{reflect.ValueOf(ctx), reflect.ValueOf(req)})
	return out[0].Interface().(soap.HasFault)
}

func installPropertyCollectorFix() {
	ref := simulator.Map.Get(types.ManagedObjectReference{Type: "PropertyCollector", Value: "propertyCollector"})
	if ref == nil { // the ESX model's name for it
		ref = simulator.Map.Get(types.ManagedObjectReference{Type: "PropertyCollector", Value: "ha-property-collector"})
	}
	if ref == nil {
		log.Fatal("property collector singleton not found")
	}
	pc := &propertyCollector{}
	pc.Self = ref.Reference()
	simulator.Map.Put(pc)
}
