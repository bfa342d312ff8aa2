use super::*;

/// A root with the `/proc` files of a small machine.
fn fake_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = root.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "proc/stat",
        "cpu  300 0 200 1000 10 0 5 0 0 0\ncpu0 100 0 100 500 5 0 2 0 0 0\ncpu1 200 0 100 500 5 0 3 0 0 0\nintr 1\nbtime 1700000000\nprocesses 4242\nprocs_running 2\n",
    );
    write(
        "proc/meminfo",
        "MemTotal:       16384 kB\nMemFree:         4096 kB\nBuffers:         1024 kB\nCached:          2048 kB\nSReclaimable:     512 kB\nSUnreclaim:       256 kB\n",
    );
    write("proc/loadavg", "0.50 0.25 0.10 2/300 4242\n");
    write(
        "proc/diskstats",
        "   8       0 sda 100 10 2000 50 200 20 4000 80 1 120 130 0 0 0 0\n",
    );
    write(
        "proc/net/dev",
        "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  eth0:    5000      50    1    2    0     0          0         0     7000      70    3    4    0     0       0          0\n",
    );
    write(
        "proc/net/tcp",
        "  sl  local_address rem_address   st\n   0: 00000000:1F90 00000000:0000 0A\n   1: 0100007F:1F90 0100007F:C350 01\n",
    );
    write(
        "proc/vmstat",
        "pgpgin 10\npgpgout 20\npswpin 1\npswpout 2\npgfault 100\npgmajfault 7\n",
    );
    write(
        "proc/swaps",
        "Filename\tType\tSize\tUsed\tPriority\n/dev/sdb partition 1024 256 -2\n",
    );
    write(
        "proc/1/stat",
        "1 (init) S 0 1 1 0 -1 4194560 100 0 0 0 300 200 0 0 20 0 1 0 500 4096000 100 18446744073709551615\n",
    );
    write("proc/1/cmdline", "/sbin/init\0splash\0");
    write("proc/1/status", "Name:\tinit\nUid:\t0\t0\t0\t0\n");
    write(
        "proc/1/io",
        "rchar: 1\nread_bytes: 4096\nwrite_bytes: 8192\n",
    );
    write(
        "proc/7/stat",
        "7 (kworker) I 2 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 10 0 0 18446744073709551615\n",
    );
    write(
        "proc/mounts",
        "proc /proc proc rw 0 0\n/dev/root / ext4 ro,relatime 0 0\n/dev/sdc /gone ext4 rw 0 0\n",
    );
    write("proc/filesystems", "nodev\tproc\nnodev\ttmpfs\n\text4\n");
    write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
    root
}

fn values(measured: &[Measured], name: &str) -> Vec<(String, Number)> {
    measured
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name} in {measured:?}"))
        .series
        .iter()
        .map(|(attributes, value)| {
            let attributes: Vec<String> =
                attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (attributes.join(","), *value)
        })
        .collect()
}

#[test]
fn each_scraper_reads_what_linux_says_with_the_collectors_names() {
    let root = fake_root();
    let host = Host::new(root.path()).unwrap();
    assert_eq!(host.boot, 1_700_000_000_000_000_000);
    let ticks = rustix::param::clock_ticks_per_second() as f64;

    let cpu = host.cpu().unwrap();
    let time = values(&cpu, "system.cpu.time");
    assert_eq!(time.len(), 16, "8 states of 2 CPUs, not the total");
    assert_eq!(
        time[0],
        ("cpu=cpu0,state=user".into(), Number::Double(100.0 / ticks))
    );
    assert_eq!(
        time[12],
        ("cpu=cpu1,state=wait".into(), Number::Double(5.0 / ticks))
    );
    assert_eq!(
        cpu[0].kind,
        Kind::Sum {
            monotonic: true,
            start: host.boot
        }
    );

    let memory = values(&host.memory().unwrap(), "system.memory.usage");
    assert_eq!(
        memory,
        [
            (
                "state=used".to_string(),
                Number::Int((16384 - 4096 - 1024 - 2048 - 512) * 1024)
            ),
            ("state=free".into(), Number::Int(4096 * 1024)),
            ("state=buffered".into(), Number::Int(1024 * 1024)),
            ("state=cached".into(), Number::Int(2048 * 1024)),
            ("state=slab_reclaimable".into(), Number::Int(512 * 1024)),
            ("state=slab_unreclaimable".into(), Number::Int(256 * 1024)),
        ]
    );

    let load = host.load().unwrap();
    assert_eq!(
        values(&load, "system.cpu.load_average.15m"),
        [(String::new(), Number::Double(0.10))]
    );
    assert_eq!(load[0].kind, Kind::Gauge);

    let disk = host.disk().unwrap();
    assert_eq!(
        values(&disk, "system.disk.io"),
        [
            (
                "device=sda,direction=read".to_string(),
                Number::Int(2000 * 512)
            ),
            ("device=sda,direction=write".into(), Number::Int(4000 * 512)),
        ]
    );
    assert_eq!(
        values(&disk, "system.disk.io_time"),
        [("device=sda".to_string(), Number::Double(0.12))]
    );
    assert_eq!(
        values(&disk, "system.disk.pending_operations"),
        [("device=sda".to_string(), Number::Int(1))]
    );

    let network = host.network().unwrap();
    assert!(
        values(&network, "system.network.io")
            .contains(&("device=eth0,direction=transmit".into(), Number::Int(7000)))
    );
    assert!(
        values(&network, "system.network.dropped")
            .contains(&("device=eth0,direction=receive".into(), Number::Int(2)))
    );
    let connections = values(&network, "system.network.connections");
    assert!(connections.contains(&("protocol=tcp,state=LISTEN".into(), Number::Int(1))));
    assert!(connections.contains(&("protocol=tcp,state=ESTABLISHED".into(), Number::Int(1))));

    let paging = host.paging().unwrap();
    assert_eq!(
        values(&paging, "system.paging.usage"),
        [
            (
                "device=/dev/sdb,state=used".to_string(),
                Number::Int(256 * 1024)
            ),
            ("device=/dev/sdb,state=free".into(), Number::Int(768 * 1024)),
        ]
    );
    assert!(
        values(&paging, "system.paging.faults").contains(&("type=minor".into(), Number::Int(93)))
    );

    let processes = host.processes().unwrap();
    assert_eq!(
        values(&processes, "system.processes.count"),
        [
            ("status=idle".to_string(), Number::Int(1)),
            ("status=sleeping".into(), Number::Int(1))
        ]
    );
    assert_eq!(
        values(&processes, "system.processes.created"),
        [(String::new(), Number::Int(4242))]
    );

    // The root's filesystem, as statvfs says; not proc (no device), not what cannot be read.
    let filesystem = host.filesystem().unwrap();
    let usage = values(&filesystem, "system.filesystem.usage");
    let states: Vec<&str> = usage.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        states,
        [
            "device=/dev/root,mode=ro,mountpoint=/,type=ext4,state=used",
            "device=/dev/root,mode=ro,mountpoint=/,type=ext4,state=free",
            "device=/dev/root,mode=ro,mountpoint=/,type=ext4,state=reserved",
        ]
    );
    let stat = rustix::fs::statvfs(root.path()).unwrap();
    let total: i64 = usage
        .iter()
        .map(|(_, v)| match v {
            Number::Int(v) => *v,
            Number::Double(_) => panic!("bytes are integers"),
        })
        .sum();
    assert_eq!(
        total as u64,
        stat.f_blocks * stat.f_frsize,
        "used, free and reserved make the whole"
    );
}

#[test]
fn processes_are_resources_of_their_own() {
    let root = fake_root();
    let host = Host::new(root.path()).unwrap();
    let processes = host.process(|name| name == "init").unwrap();
    assert_eq!(processes.len(), 1, "kworker left out");
    let (resource, metrics) = &processes[0];
    let resource: Vec<String> = resource.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(
        resource,
        [
            "process.pid=1",
            "process.parent_pid=0",
            "process.executable.name=init",
            "process.executable.path=",
            "process.command=init",
            "process.command_line=/sbin/init splash",
            "process.owner=root",
        ]
    );
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    assert_eq!(
        values(metrics, "process.cpu.time"),
        [
            ("state=user".to_string(), Number::Double(300.0 / ticks)),
            ("state=system".into(), Number::Double(200.0 / ticks))
        ]
    );
    let page = rustix::param::page_size() as i64;
    assert_eq!(
        values(metrics, "process.memory.usage"),
        [(String::new(), Number::Int(100 * page))]
    );
    assert_eq!(
        values(metrics, "process.memory.virtual"),
        [(String::new(), Number::Int(4_096_000))]
    );
    assert_eq!(
        values(metrics, "process.disk.io"),
        [
            ("direction=read".to_string(), Number::Int(4096)),
            ("direction=write".into(), Number::Int(8192))
        ]
    );
    assert_eq!(
        metrics[0].kind,
        Kind::Sum {
            monotonic: true,
            start: host.boot + (500.0 / ticks * 1e9) as u64
        }
    );
}

#[test]
fn filters_and_toggles_choose_what_is_sent() {
    let root = fake_root();
    let config: HostmetricsConfig = crate::yaml::from_value(
        crate::yaml::parse(&format!(
            "root_path: {}\nscrapers:\n  network:\n    include: {{interfaces: ['eth.*'], match_type: regexp}}\n    metrics: {{system.network.connections: {{enabled: false}}}}\n  load:\n",
            root.path().display()
        ))
        .unwrap(),
    )
    .unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    let (request, errors) = scrape_all(&config, &config.root_path);
    assert!(errors.is_empty(), "{errors:?}");
    let scopes = &request.resource_metrics[0].scope_metrics;
    let names: Vec<(&str, &str)> = scopes
        .iter()
        .flat_map(|s| {
            s.metrics
                .iter()
                .map(move |m| (s.scope.as_ref().unwrap().name.as_str(), m.name.as_str()))
        })
        .collect();
    assert!(names.contains(&("odigos-rs/hostmetrics/load", "system.cpu.load_average.1m")));
    assert!(
        !names
            .iter()
            .any(|(_, n)| *n == "system.network.connections")
    );
    let io = scopes
        .iter()
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == "system.network.io")
        .unwrap();
    let Some(metric::Data::Sum(sum)) = &io.data else {
        panic!("a sum")
    };
    assert_eq!(sum.data_points.len(), 2, "eth0 only");
    assert_eq!(sum.aggregation_temporality, 2);
    assert!(sum.is_monotonic);
}

#[test]
fn bad_settings_are_named() {
    let problems = crate::receiver::problems::<HostmetricsConfig>;
    assert_eq!(
        problems("scrapers: {gpu: }"),
        [
            "scrapers.gpu: unknown scraper \"gpu\"; known: cpu, disk, filesystem, load, memory, network, paging, process, processes"
        ]
    );
    assert_eq!(
        problems("scrapers: {cpu: {include: {names: [x]}}}"),
        ["scrapers.cpu.include: the cpu scraper has no include"]
    );
    assert_eq!(
        problems("scrapers: {network: {include: {names: [x]}}}"),
        ["scrapers.network.include.names: include of the network scraper takes interfaces"]
    );
    assert_eq!(
        problems("scrapers: {process: {include: {names: ['('], match_type: regexp}}}")[0],
        "scrapers.process.include.names: invalid regex \"(\": regex parse error:\n    (\n    ^\nerror: unclosed group"
    );
}
