-- AutoPi idle periods in the conformed shape of int_idle_periods__unioned: runs of
-- consecutive idle intervals (engine on, speed 0) lasting at least var autopi_idle_min_s
-- (default 60 s). A period starts at its first speed-0 reading and ends at the next reading
-- that is not idle (or the trip's end), so its length is exact to one sampling interval.
-- Daily by the period's start: a build reads the speed intervals of trips started on its days
-- and the day before (a trip that crosses midnight idles on the next day); no datapoint.
{{ daily_table('started_at') }}

with intervals as (
    select * from {{ ref('int_autopi__speed_intervals') }}
    where {{ in_days('day', 1, 0) }}
),

trips as (
    select autopi_trip_id, source_trip_id, source_vehicle_id from {{ ref('stg_autopi__trips') }}
    where {{ in_days('day', 1, 0) }}
),

runs as (
    select
        *,
        -- every interval that is not idle closes the current run
        sum(case when state = 'idle' then 0 else 1 end) over (
            partition by source_trip_id order by started_at, line_no rows unbounded preceding
        ) as run_no
    from intervals
),

periods as (
    select
        source_trip_id,
        run_no,
        min(started_at) as started_at,
        max(ended_at) as ended_at,
        -- the last GPS fix at or before the period's start
        arg_min(lat, started_at) as lat,
        arg_min(lon, started_at) as lon
    from runs
    where state = 'idle'
    group by 1, 2
),

long_enough as (
    select *, epoch(ended_at) - epoch(started_at) as duration_s
    from periods
    where epoch(ended_at) - epoch(started_at) >= {{ var('autopi_idle_min_s', 60) }}
        and {{ in_days('started_at') }}
),

final as (
    select
        md5(
            'autopi|' || long_enough.source_trip_id || '|'
            || strftime(long_enough.started_at at time zone 'UTC', '%Y-%m-%dT%H:%M:%S.%f')
        ) as idle_period_id,
        'autopi' as source,
        trips.source_vehicle_id,
        long_enough.started_at,
        long_enough.ended_at,
        long_enough.duration_s,
        long_enough.lat,
        long_enough.lon,
        cast(null as varchar) as address,
        trips.autopi_trip_id as trip_id
    from long_enough
    inner join trips on trips.source_trip_id = long_enough.source_trip_id
)

select * from final
