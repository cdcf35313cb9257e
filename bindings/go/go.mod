module github.com/composefs-storage/composefs-storage/bindings/go

go 1.21
